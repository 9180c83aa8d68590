"""The house's import rules, checked by walking every module's imports with ``ast``.

The hexagon:

- ``<pkg>.domain`` imports no I/O, concurrency, network or clock library, and
  nothing of the package outside ``domain`` and ``errors``; the fleet's
  decisions (``domain.fleet``) import nothing but the domain, ``errors``,
  ``msgspec`` and a few pure standard modules;
- ``<pkg>.ports`` imports only ``domain``/``errors`` and typing helpers;
- ``<pkg>.adapters`` never imports ``<pkg>.app``.

The two programs: every module belongs to the agent, to the control plane or
to the code both share (:data:`AGENT`, :data:`CONTROL_PLANE`, :data:`SHARED`);
the agent's modules never import the control plane's, nor the reverse.  The
shared modules may import either side (``app.cli`` wires both programs), so
a second rule follows what actually runs: the imports executed when the
agent's modules load (not those inside functions, nor typing-only ones) never
reach the control plane's modules or ``sqlite3``.

Imports under ``if TYPE_CHECKING:`` count for the first rules: a rule that
typing may break is a rule the next refactor will break for real.

Outside the package: the benchmarks take from the tests only the shared
``tests.support`` (and the fault scenarios they run), and ``tests.support``
builds on the fakes, never on a test module.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Final

import pytest

import vectorlay

# Top-level modules the pure domain must not import: I/O, processes, network,
# concurrency, clocks, randomness, dynamic imports.
DOMAIN_FORBIDDEN: Final = frozenset(
    {
        "anyio",
        "asyncio",
        "trio",
        "sniffio",
        "httpx",
        "httpx_ws",
        "httpcore",
        "websockets",
        "wsproto",
        "h11",
        "psutil",
        "subprocess",
        "socket",
        "ssl",
        "select",
        "selectors",
        "signal",
        "threading",
        "multiprocessing",
        "concurrent",
        "os",
        "pathlib",
        "shutil",
        "tempfile",
        "glob",
        "fcntl",
        "io",
        "mmap",
        "sqlite3",
        "logging",
        "time",
        "random",
        "secrets",
        "importlib",
        "builtins",
        "sys",
    }
)
PORTS_ALLOWED_STDLIB: Final = frozenset(
    {"__future__", "typing", "collections", "contextlib", "datetime"}
)
# What the fleet's decisions may import besides the domain and errors (hashlib:
# node tokens are kept as digests, a pure function of the token).
FLEET_ALLOWED: Final = frozenset(
    {"__future__", "enum", "collections", "datetime", "typing", "hashlib", "msgspec"}
)

# The two programs and the code they share, by package (relative to the
# package root).  A name covers the module or package and everything in it.
AGENT: Final = (
    "domain.agent",
    "adapters.transport",
    "adapters.runtime",
    "adapters.probe",
    "adapters.memory.agent",
    "adapters.memory.host",
    "app.agent",
    "adapters.textfiles",
    "adapters.deployrecord",
)
CONTROL_PLANE: Final = (
    "domain.fleet",
    "adapters.controlplane",
    "adapters.memory.fleet",
    "app.controlplane",
)
SHARED: Final = (
    "",  # the package's own __init__
    "__main__",
    "errors",
    "ports",
    "domain",  # its __init__; its top-level modules are matched below
    "adapters",
    "adapters.memory",  # its __init__ re-exports both programs' twins
    "adapters.filesystem",
    "adapters.clock",
    "adapters.commands",
    "app",
    "app.cli",
    "app.options",
    "app.logs",
    "app.backends",
    "app.settings",
)
# What the agent's process must never load.
AGENT_NEVER_LOADS: Final = ("app.controlplane", "adapters.controlplane")
AGENT_NEVER_LOADS_STDLIB: Final = frozenset({"sqlite3"})


def _module_name(root: Path, path: Path, package: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """Absolute names imported by ``node`` (``from . import x`` gives ``pkg.x``)."""
    if node.level == 0:
        base = node.module or ""
    else:
        parts = module.split(".")
        # A package's own __init__ is its level-1 anchor; a module's is its parent.
        keep = len(parts) - node.level + (1 if is_package else 0)
        base = ".".join(parts[:keep])
        if node.module:
            base = f"{base}.{node.module}" if base else node.module
    # "from pkg import sub" may import a submodule: check both names.
    return [base] + [f"{base}.{alias.name}" for alias in node.names if alias.name != "*"]


def _modules(root: Path, package: str) -> Iterator[tuple[str, bool, ast.Module]]:
    """``(module, is a package, syntax tree)`` for every module of the package at ``root``."""
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        yield _module_name(root, path, package), path.name == "__init__.py", tree


def _names(module: str, is_package: bool, node: ast.AST) -> list[str]:
    """What an import statement (or a call of ``__import__``) imports."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        return _resolve(module, is_package, node)
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "__import__"
    ):
        return ["builtins"]  # a dynamic import is never pure
    return []


def iter_imports(root: Path, package: str) -> Iterator[tuple[str, int, str]]:
    """``(module, line, imported name)`` for every import in the package at ``root``."""
    for module, is_package, tree in _modules(root, package):
        for node in ast.walk(tree):
            for name in _names(module, is_package, node):
                yield module, getattr(node, "lineno", 0), name


def _typing_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _executed(nodes: list[ast.stmt]) -> Iterator[ast.AST]:
    """The nodes run when a module is imported: not function bodies, not typing-only blocks."""
    for node in nodes:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            # Decorators, defaults and annotations run at import; the body does not.
            yield from _expressions([*node.decorator_list, *node.args.defaults])
        elif isinstance(node, ast.If) and _typing_only(node):
            yield from _executed(node.orelse)
        else:
            yield node
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                for child in getattr(node, field, []):
                    if isinstance(child, ast.stmt):
                        yield from _executed([child])
                    else:  # an except handler or a match case: its body runs
                        yield from _executed(child.body)
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.expr):
                    yield from _expressions([child])


def _expressions(nodes: list[ast.expr]) -> Iterator[ast.AST]:
    """Every node of the expressions, except inside lambdas (which run later, if ever)."""
    todo: list[ast.AST] = list(nodes)
    while todo:
        node = todo.pop()
        if not isinstance(node, ast.Lambda):
            yield node
            todo.extend(ast.iter_child_nodes(node))


def load_time_imports(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the names it imports while it loads (what ``import module`` executes)."""
    found: dict[str, set[str]] = {}
    for module, is_package, tree in _modules(root, package):
        names = found.setdefault(module, set())
        for node in _executed(tree.body):
            names.update(_names(module, is_package, node))
    return found


def _parents(name: str) -> list[str]:
    """``a.b.c`` loads ``a``, ``a.b`` and ``a.b.c``."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def loaded_by(root: Path, package: str, entry: list[str]) -> set[str]:
    """Every name loaded, transitively, when the ``entry`` modules are imported.

    Follows the load-time imports of the package's own modules; names outside
    the package are collected but not followed.  Dynamic imports
    (``importlib``) are not seen.
    """
    imports = load_time_imports(root, package)
    seen: set[str] = set()
    todo = [parent for name in entry for parent in _parents(name)]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for imported in imports.get(name, ()):
            todo.extend(_parents(imported))
    return seen


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def _absolute(package: str, relative: str) -> str:
    return f"{package}.{relative}" if relative else package


def _in_any(name: str, package: str, relatives: tuple[str, ...]) -> bool:
    return any(_within(name, _absolute(package, r)) for r in relatives)


def program_of(module: str, package: str = "vectorlay", *, is_package: bool = False) -> str | None:
    """``"agent"``, ``"control plane"`` or ``"shared"``; None for a module the map misses."""
    if _in_any(module, package, AGENT):
        return "agent"
    if _in_any(module, package, CONTROL_PLANE):
        return "control plane"
    if module in {_absolute(package, r) for r in SHARED}:
        return "shared"
    if module.rpartition(".")[0] == f"{package}.domain" and not is_package:
        return "shared"  # a top-level domain module: wire messages, validation, ...
    return None


def check_layers(root: Path, package: str = "vectorlay") -> list[str]:
    """Every broken import rule in the package whose source is ``root``.

    Returns one line per violation, ``module:line imports name (rule)``.
    """
    domain, ports = f"{package}.domain", f"{package}.ports"
    adapters, app, errors = f"{package}.adapters", f"{package}.app", f"{package}.errors"
    fleet = f"{package}.domain.fleet"
    found: list[str] = []
    for module, line, name in iter_imports(root, package):
        rule: str | None = None
        own = _within(name, package)
        mine, theirs = program_of(module, package), own and program_of(name, package)
        if mine == "agent" and theirs == "control plane":
            rule = "the agent never imports the control plane"
        elif mine == "control plane" and theirs == "agent":
            rule = "the control plane never imports the agent"
        elif _within(module, domain):
            if _top(name) in DOMAIN_FORBIDDEN:
                rule = "the domain does no I/O"
            elif own and not (_within(name, domain) or _within(name, errors) or name == package):
                rule = "the domain imports only the domain and errors"
            elif _within(module, fleet) and not own and _top(name) not in FLEET_ALLOWED:
                rule = "the fleet's decisions import only the domain and pure helpers"
        elif module == ports:
            if own and not (_within(name, domain) or _within(name, errors) or name == package):
                rule = "ports import only the domain"
            elif not own and _top(name) not in PORTS_ALLOWED_STDLIB:
                rule = "ports import only the domain and typing helpers"
        elif _within(module, adapters) and _within(name, app):
            rule = "adapters never import the app"
        if rule is not None:
            found.append(f"{module}:{line} imports {name} ({rule})")
    return sorted(set(found))


def unplaced(root: Path, package: str = "vectorlay") -> list[str]:
    """Modules that belong to neither program nor to the shared code."""
    return [
        module
        for module, is_package, _ in _modules(root, package)
        if program_of(module, package, is_package=is_package) is None
    ]


def agent_loads_control_plane(root: Path, package: str = "vectorlay") -> list[str]:
    """What of the control plane the agent's process would load, sorted."""
    agent_modules = [m for m, _, _ in _modules(root, package) if program_of(m, package) == "agent"]
    entry = [*agent_modules, _absolute(package, "app.cli"), _absolute(package, "__main__")]
    loaded = loaded_by(root, package, entry)
    return sorted(
        name
        for name in loaded
        if _in_any(name, package, AGENT_NEVER_LOADS) or _top(name) in AGENT_NEVER_LOADS_STDLIB
    )


def control_plane_loads_agent(root: Path, package: str = "vectorlay") -> list[str]:
    """What of the agent the control plane's process would load, sorted.

    The process starts from the control plane's server side (its app, domain
    and server adapters); its in-memory store twin is a test adapter and
    loads with the other twins.
    """
    entry = [
        m
        for m, _, _ in _modules(root, package)
        if _in_any(m, package, ("app.controlplane", "domain.fleet", "adapters.controlplane"))
    ]
    loaded = loaded_by(root, package, entry)
    assert _absolute(package, "domain.fleet.fleet") in loaded or not entry
    return sorted(name for name in loaded if _in_any(name, package, AGENT))


SOURCE_ROOT: Final = Path(vectorlay.__file__).parent


def test_the_package_keeps_its_layers() -> None:
    assert check_layers(SOURCE_ROOT) == []


REPO_ROOT: Final = Path(__file__).resolve().parents[2]
# What the benchmarks may take from the tests: the shared support package,
# and the fault scenarios themselves for the long fault campaigns.
BENCHMARKS_MAY_IMPORT: Final = ("tests.support", "tests.faults.scenarios", "tests.faults.truth")


def test_benchmarks_use_only_the_shared_test_support() -> None:
    imported = [
        (module, line, name)
        for module, line, name in iter_imports(REPO_ROOT / "benchmarks", "benchmarks")
        if _within(name, "tests")
    ]
    assert imported  # they do use it
    assert [
        f"{module}:{line} imports {name}"
        for module, line, name in imported
        # "from tests.faults import scenarios" names the package too.
        if not any(
            _within(name, allowed) or _within(allowed, name) for allowed in BENCHMARKS_MAY_IMPORT
        )
    ] == []


def test_the_test_support_imports_no_test_module() -> None:
    """The support package is what tests build on: it needs the fakes, never a test."""
    imported = iter_imports(REPO_ROOT / "tests" / "support", "tests.support")
    assert [
        f"{module}:{line} imports {name}"
        for module, line, name in imported
        if _within(name, "tests") and not _in_any(name, "tests", ("support", "fakes"))
    ] == []


def test_every_module_belongs_to_a_program_or_is_shared() -> None:
    assert unplaced(SOURCE_ROOT) == []


def test_the_agent_process_never_loads_the_control_plane() -> None:
    assert agent_loads_control_plane(SOURCE_ROOT) == []


def test_the_control_plane_process_never_loads_the_agent() -> None:
    assert control_plane_loads_agent(SOURCE_ROOT) == []


def test_the_walk_sees_the_real_modules() -> None:
    """Guard against a checker that passes because it looks at nothing."""
    modules = {module for module, _, _ in iter_imports(SOURCE_ROOT, "vectorlay")}
    assert {"vectorlay.domain.messages", "vectorlay.ports", "vectorlay.adapters.memory"} <= modules
    names = {name for module, _, name in iter_imports(SOURCE_ROOT, "vectorlay")}
    assert "msgspec" in names
    assert "anyio" in names  # imported by the adapters, where it belongs
    # Every package the map of the two programs names is there.
    every = {module for module, _, _ in _modules(SOURCE_ROOT, "vectorlay")}
    for relative in (*AGENT, *CONTROL_PLANE, *SHARED):
        assert _absolute("vectorlay", relative) in every, relative
    # The agent's process loads its own code, and the shared code it needs.
    loaded = loaded_by(SOURCE_ROOT, "vectorlay", ["vectorlay.app.cli"])
    assert {"vectorlay.app.settings", "vectorlay.domain.liveness", "argparse"} <= loaded


# --- the checker fails when someone breaks a rule ---------------------------------------


def write_package(root: Path, files: Mapping[str, str | None]) -> Path:
    """A package ``fakepkg`` under ``root``: a small clean hexagon plus ``files``
    (a file given as None is left out)."""
    pkg = root / "fakepkg"
    base = {
        "__init__.py": "",
        "errors.py": "class Oops(Exception): ...\n",
        "domain/__init__.py": "",
        "domain/rules.py": "from fakepkg.errors import Oops\nfrom . import other\n",
        "domain/other.py": "import re\nfrom typing import Final\n",
        "ports.py": "from typing import Protocol\nfrom fakepkg.domain.rules import Oops\n",
        "adapters/__init__.py": "",
        "adapters/real.py": "import os\nimport anyio\nfrom fakepkg import ports\n",
        "app/__init__.py": "",
        "app/main.py": "from fakepkg.adapters import real\n",
    }
    for name, text in {**base, **files}.items():
        if text is None:
            continue
        path = pkg / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return pkg


def test_a_clean_fake_package_passes(tmp_path: Path) -> None:
    assert check_layers(write_package(tmp_path, {}), "fakepkg") == []


def test_a_domain_module_doing_io_fails(tmp_path: Path) -> None:
    pkg = write_package(tmp_path, {"domain/bad.py": "import re\nimport subprocess\n"})
    assert check_layers(pkg, "fakepkg") == [
        "fakepkg.domain.bad:2 imports subprocess (the domain does no I/O)"
    ]


def test_every_kind_of_break_is_caught(tmp_path: Path) -> None:
    bad = {
        "domain/bad_anyio.py": "from anyio import sleep\n",
        "domain/bad_os.py": "import os.path\n",
        "domain/bad_pathlib.py": "from pathlib import Path\n",
        "domain/bad_psutil.py": "import psutil\n",
        "domain/bad_httpx.py": "import httpx_ws\n",
        "domain/bad_socket.py": "import socket\n",
        "domain/bad_time.py": "import time\n",
        "domain/bad_dynamic.py": "m = __import__('subprocess')\n",
        "domain/bad_typing_only.py": """\
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                import anyio
            """,
        "domain/bad_nested.py": """\
            def later():
                import shutil
            """,
        "domain/bad_layer.py": "from fakepkg.adapters import real\n",
        "domain/bad_relative.py": "from ..app import main\n",
        "domain/bad_ports.py": "from .. import ports\n",
        "ports.py": "import anyio\nfrom fakepkg.adapters.real import x\n",
        "adapters/bad.py": "from fakepkg.app.main import run\n",
        "adapters/bad_relative.py": "from ..app import main\n",
    }
    found = check_layers(write_package(tmp_path, bad), "fakepkg")
    broken = {line.split(":", 1)[0] for line in found}
    assert broken == {
        "fakepkg.domain.bad_anyio",
        "fakepkg.domain.bad_os",
        "fakepkg.domain.bad_pathlib",
        "fakepkg.domain.bad_psutil",
        "fakepkg.domain.bad_httpx",
        "fakepkg.domain.bad_socket",
        "fakepkg.domain.bad_time",
        "fakepkg.domain.bad_dynamic",
        "fakepkg.domain.bad_typing_only",
        "fakepkg.domain.bad_nested",
        "fakepkg.domain.bad_layer",
        "fakepkg.domain.bad_relative",
        "fakepkg.domain.bad_ports",
        "fakepkg.ports",
        "fakepkg.adapters.bad",
        "fakepkg.adapters.bad_relative",
    }
    assert (
        "fakepkg.ports:1 imports anyio (ports import only the domain and typing helpers)" in found
    )
    assert "fakepkg.ports:2 imports fakepkg.adapters.real (ports import only the domain)" in found
    assert "fakepkg.adapters.bad:1 imports fakepkg.app.main (adapters never import the app)" in (
        found
    )


def test_relative_imports_resolve_like_python(tmp_path: Path) -> None:
    pkg = write_package(
        tmp_path,
        {
            "domain/__init__.py": "from . import other\nfrom .rules import Oops\n",
            "domain/sub/__init__.py": "from .. import rules\nfrom ...errors import Oops\n",
        },
    )
    names = {(m, n) for m, _, n in iter_imports(pkg, "fakepkg")}
    assert ("fakepkg.domain", "fakepkg.domain.other") in names
    assert ("fakepkg.domain", "fakepkg.domain.rules") in names
    assert ("fakepkg.domain.sub", "fakepkg.domain.rules") in names
    assert ("fakepkg.domain.sub", "fakepkg.errors") in names
    assert check_layers(pkg, "fakepkg") == []


# --- the two programs ---------------------------------------------------------------------

TWO_PROGRAMS: Final[dict[str, str | None]] = {
    "adapters/real.py": None,
    "app/main.py": None,
    "domain/agent/__init__.py": "",
    "domain/agent/replicas.py": "from fakepkg.domain.rules import Oops\n",
    "domain/fleet/__init__.py": "",
    "domain/fleet/node.py": "import enum\nimport hashlib\nimport msgspec\nfrom .. import rules\n",
    "adapters/runtime/__init__.py": "",
    "adapters/runtime/nerdctl.py": "import anyio\nfrom fakepkg.domain.agent import replicas\n",
    "adapters/controlplane/__init__.py": "",
    "adapters/controlplane/store.py": "import sqlite3\nfrom fakepkg.domain.fleet import node\n",
    "adapters/memory.py": """\
        from fakepkg.domain.agent import replicas
        from fakepkg.domain.fleet import node
        """,
    "app/agent/__init__.py": "",
    "app/agent/service.py": """\
        from fakepkg.adapters.runtime import nerdctl
        from fakepkg.app import settings
        """,
    "app/controlplane/__init__.py": "",
    "app/controlplane/server.py": """\
        from fakepkg.adapters.controlplane import store
        from fakepkg.app import settings
        """,
    "app/settings.py": "from fakepkg.domain.agent import replicas\n",
    "app/cli.py": """\
        from fakepkg.app import settings

        def main(command):
            if command == "run":
                from fakepkg.app.agent import service
            else:
                from fakepkg.app.controlplane import server
        """,
}


def two_programs(root: Path, files: Mapping[str, str | None]) -> Path:
    return write_package(root, {**TWO_PROGRAMS, **files})


def test_two_clean_programs_pass(tmp_path: Path) -> None:
    pkg = two_programs(tmp_path, {})
    assert check_layers(pkg, "fakepkg") == []
    assert unplaced(pkg, "fakepkg") == []
    assert agent_loads_control_plane(pkg, "fakepkg") == []
    # The walk saw the programs' modules, and what the agent loads.
    assert program_of("fakepkg.app.agent.service", "fakepkg") == "agent"
    assert program_of("fakepkg.adapters.controlplane.store", "fakepkg") == "control plane"
    assert program_of("fakepkg.domain.rules", "fakepkg") == "shared"
    loaded = loaded_by(pkg, "fakepkg", ["fakepkg.app.cli", "fakepkg.app.agent.service"])
    assert {"fakepkg.app.settings", "fakepkg.domain.agent.replicas", "anyio"} <= loaded


def test_the_agent_and_the_control_plane_never_import_each_other(tmp_path: Path) -> None:
    bad = {
        "domain/agent/bad.py": "from fakepkg.domain.fleet.node import Status\n",
        "domain/fleet/bad_relative.py": "from ..agent import replicas\n",
        "domain/fleet/bad_helper.py": "import itertools\n",
        "adapters/transport/__init__.py": "",
        "adapters/transport/bad.py": "from fakepkg.adapters.controlplane import store\n",
        "adapters/controlplane/bad.py": "import fakepkg.adapters.runtime.nerdctl\n",
        "adapters/probe/__init__.py": "",
        "adapters/probe/bad_lazy.py": """\
            def later():
                import fakepkg.app.controlplane.server
            """,
        "app/agent/bad.py": "from ..controlplane import server\n",
        "app/controlplane/bad_typing_only.py": """\
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from fakepkg.domain.agent.replicas import ContainerSpec
            """,
    }
    found = check_layers(two_programs(tmp_path, bad), "fakepkg")
    assert {line.split(":", 1)[0] for line in found} == {
        "fakepkg.domain.agent.bad",
        "fakepkg.domain.fleet.bad_relative",
        "fakepkg.domain.fleet.bad_helper",
        "fakepkg.adapters.transport.bad",
        "fakepkg.adapters.controlplane.bad",
        "fakepkg.adapters.probe.bad_lazy",
        "fakepkg.app.agent.bad",
        "fakepkg.app.controlplane.bad_typing_only",
    }
    agent_rule, cp_rule = (
        "(the agent never imports the control plane)",
        "(the control plane never imports the agent)",
    )
    assert f"fakepkg.domain.agent.bad:1 imports fakepkg.domain.fleet.node {agent_rule}" in found
    assert f"fakepkg.domain.fleet.bad_relative:1 imports fakepkg.domain.agent {cp_rule}" in found
    assert (
        "fakepkg.domain.fleet.bad_helper:1 imports itertools "
        "(the fleet's decisions import only the domain and pure helpers)"
    ) in found
    assert (
        f"fakepkg.adapters.probe.bad_lazy:2 imports fakepkg.app.controlplane.server {agent_rule}"
    ) in found
    assert f"fakepkg.app.agent.bad:1 imports fakepkg.app.controlplane.server {agent_rule}" in found
    assert (
        "fakepkg.app.controlplane.bad_typing_only:3 imports "
        f"fakepkg.domain.agent.replicas.ContainerSpec {cp_rule}"
    ) in found


def test_a_module_outside_the_map_is_reported(tmp_path: Path) -> None:
    # The hexagon's fake package predates the map: its adapter and app are nobody's.
    assert unplaced(write_package(tmp_path / "old", {}), "fakepkg") == [
        "fakepkg.adapters.real",
        "fakepkg.app.main",
    ]
    extra: dict[str, str | None] = {
        "domain/new_shared.py": "",
        "domain/newpkg/__init__.py": "",
        "domain/newpkg/thing.py": "",
        "adapters/gpu_health.py": "",
        "app/status.py": "",
    }
    assert unplaced(two_programs(tmp_path / "new", extra), "fakepkg") == [
        "fakepkg.adapters.gpu_health",
        "fakepkg.app.status",
        "fakepkg.domain.newpkg",
        "fakepkg.domain.newpkg.thing",
    ]


@pytest.mark.parametrize(
    ("files", "loaded"),
    [
        pytest.param(
            {"app/cli.py": "from fakepkg.app.controlplane import server\n"},
            [
                "fakepkg.adapters.controlplane",
                "fakepkg.adapters.controlplane.store",
                "fakepkg.app.controlplane",
                "fakepkg.app.controlplane.server",
                "sqlite3",
            ],
            id="cli-imports-the-control-plane-eagerly",
        ),
        pytest.param(
            {"app/settings.py": "from fakepkg.adapters.controlplane.store import Store\n"},
            [
                "fakepkg.adapters.controlplane",
                "fakepkg.adapters.controlplane.store",
                "fakepkg.adapters.controlplane.store.Store",
                "sqlite3",
            ],
            id="through-a-shared-module",
        ),
        pytest.param(
            {"app/settings.py": "import sqlite3.dbapi2\n"},
            ["sqlite3", "sqlite3.dbapi2"],
            id="sqlite3",
        ),
        pytest.param(
            {
                "app/settings.py": """\
                    from typing import TYPE_CHECKING
                    if TYPE_CHECKING:
                        from fakepkg.app.controlplane import server
                    else:
                        import sqlite3
                    """
            },
            ["sqlite3"],
            id="typing-only-is-not-loaded-but-its-else-is",
        ),
        pytest.param(
            {
                "app/agent/service.py": """\
                    class Service:
                        import fakepkg.app.controlplane
                        def later(self):
                            import sqlite3
                    """
            },
            ["fakepkg.app.controlplane"],
            id="class-bodies-run-function-bodies-do-not",
        ),
    ],
)
def test_what_the_agent_process_loads_is_followed(
    tmp_path: Path, files: dict[str, str | None], loaded: list[str]
) -> None:
    assert agent_loads_control_plane(two_programs(tmp_path, files), "fakepkg") == loaded
