"""The control plane stays out of the agent, and its decisions stay pure."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import vectorlay.adapters.controlplane.sqlite_store
import vectorlay.domain.fleet.fleet

SRC = Path(vectorlay.__file__).resolve().parent


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            names.add(node.module)
    return names


def test_fleet_decisions_import_only_the_domain() -> None:
    modules = imported_modules(SRC / "domain" / "fleet" / "fleet.py")
    outside = {
        m
        for m in modules
        if not m.startswith(("vectorlay.domain", "vectorlay.errors"))
        and m.split(".")[0] not in {"__future__", "enum", "collections", "datetime", "typing"}
        and m != "msgspec"
    }
    assert outside == set()


def test_the_store_adapter_never_imports_the_app() -> None:
    path = Path(vectorlay.adapters.controlplane.sqlite_store.__file__)
    assert not any(m.startswith("vectorlay.app") for m in imported_modules(path))


def test_the_agent_never_loads_the_control_plane() -> None:
    code = (
        "import sys, vectorlay.app.agent.service, vectorlay.app.cli\n"
        "print(sorted(m for m in sys.modules if m.startswith("
        "('vectorlay.app.controlplane', 'vectorlay.adapters.controlplane', "
        "'sqlite3'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
