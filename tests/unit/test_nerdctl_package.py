"""The runtime adapter's package: its public names, and what reading a default costs."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import vectorlay.adapters.runtime as runtime_package

MODULES = (
    "argv",
    "dialect",
    "docker",
    "engines",
    "envfile",
    "events",
    "labels",
    "nerdctl",
    "output",
    "podman",
    "runtime",
    "stderr",
)


@pytest.mark.parametrize("name", runtime_package.__all__)
def test_every_public_name_is_reachable_from_the_package(name: str) -> None:
    value = getattr(runtime_package, name)
    homes = [
        module
        for module in MODULES
        if getattr(importlib.import_module(f"{runtime_package.__name__}.{module}"), name, None)
        is value
    ]
    assert homes, f"{name} is not the object its module defines"
    assert name in dir(runtime_package)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        _ = runtime_package.no_such_thing


def test_reading_the_settings_does_not_load_the_runtime_machinery() -> None:
    # The settings' defaults come from the adapter; `status` and library users
    # of the settings must not pay for the process and async machinery.
    code = (
        "import sys, vectorlay.app.agent.settings as s\n"
        "assert s.AgentSettings().oci_runtime == 'io.containerd.kata.v2'\n"
        "print(sorted(m for m in sys.modules if m in ("
        "'vectorlay.adapters.runtime.runtime', 'vectorlay.adapters.runtime.events',"
        " 'vectorlay.adapters.commands')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("engine", "loaded"),
    [("nerdctl", []), ("docker", ["docker"]), ("podman", ["podman"])],
)
def test_the_agent_loads_only_its_own_engines_dialect(
    engine: str, loaded: list[str], tmp_path: Path
) -> None:
    # Every module the daemon loads stays in its memory for its whole life: a
    # nerdctl node must not carry Docker's or Podman's parsers.
    code = (
        "import sys, pathlib\n"
        "from vectorlay.app.agent.bootstrap import build_agent\n"
        "from vectorlay.app.agent.settings import AgentSettings\n"
        "build_agent(AgentSettings(control_plane_url='ws://127.0.0.1:1/v1/agent',"
        f" org_token='x', state_dir=pathlib.Path(sys.argv[1]), engine={engine!r},"
        f" engine_cli={engine!r}))\n"
        "print(sorted(m.rsplit('.', 1)[1] for m in sys.modules if m in ("
        "'vectorlay.adapters.runtime.docker', 'vectorlay.adapters.runtime.podman')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.strip() == repr(loaded)
