"""The hexagon's import rules, checked by walking every module's imports with ``ast``.

- ``<pkg>.domain`` imports no I/O, concurrency, network or clock library, and
  nothing of the package outside ``domain`` and ``errors``;
- ``<pkg>.ports`` imports only ``domain``/``errors`` and typing helpers;
- ``<pkg>.adapters`` never imports ``<pkg>.app``.

Imports under ``if TYPE_CHECKING:`` count too: a rule that typing may break
is a rule the next refactor will break for real.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Final

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


def iter_imports(root: Path, package: str) -> Iterator[tuple[str, int, str]]:
    """``(module, line, imported name)`` for every import in the package at ``root``."""
    for path in sorted(root.rglob("*.py")):
        module = _module_name(root, path, package)
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield module, node.lineno, alias.name
            elif isinstance(node, ast.ImportFrom):
                for name in _resolve(module, is_package, node):
                    yield module, node.lineno, name
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "__import__"
            ):
                yield module, node.lineno, "builtins"  # a dynamic import is never pure


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def check_layers(root: Path, package: str = "vectorlay") -> list[str]:
    """Every broken import rule in the package whose source is ``root``.

    Returns one line per violation, ``module:line imports name (rule)``.
    """
    domain, ports = f"{package}.domain", f"{package}.ports"
    adapters, app, errors = f"{package}.adapters", f"{package}.app", f"{package}.errors"
    found: list[str] = []
    for module, line, name in iter_imports(root, package):
        rule: str | None = None
        own = _within(name, package)
        if _within(module, domain):
            if _top(name) in DOMAIN_FORBIDDEN:
                rule = "the domain does no I/O"
            elif own and not (_within(name, domain) or _within(name, errors) or name == package):
                rule = "the domain imports only the domain and errors"
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


SOURCE_ROOT: Final = Path(vectorlay.__file__).parent


def test_the_package_keeps_its_layers() -> None:
    assert check_layers(SOURCE_ROOT) == []


def test_the_walk_sees_the_real_modules() -> None:
    """Guard against a checker that passes because it looks at nothing."""
    modules = {module for module, _, _ in iter_imports(SOURCE_ROOT, "vectorlay")}
    assert {"vectorlay.domain.messages", "vectorlay.ports", "vectorlay.adapters.memory"} <= modules
    names = {name for module, _, name in iter_imports(SOURCE_ROOT, "vectorlay")}
    assert "msgspec" in names
    assert "anyio" in names  # imported by the adapters, where it belongs


# --- the checker fails when someone breaks a rule ---------------------------------------


def write_package(root: Path, files: dict[str, str]) -> Path:
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
