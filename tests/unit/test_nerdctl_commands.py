"""The nerdctl command lines, the input checks before them, and the env directory."""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path

import pytest

from vectorlay.adapters.runtime import NerdctlRuntime
from vectorlay.adapters.runtime.argv import (
    check_spec,
    events_argv,
    grace_seconds,
    inspect_argv,
    ps_argv,
    rm_argv,
    run_argv,
    stop_argv,
)
from vectorlay.adapters.runtime.envfile import prepare_env_dir
from vectorlay.domain.agent.replicas import ContainerSpec, GpuSlot
from vectorlay.errors import ConfigError, ContainerRuntimeError

GPUS = (GpuSlot("0000:17:00.0", "25"), GpuSlot("0000:2a:00.0", "31"))


def test_run_command_line() -> None:
    spec = ContainerSpec("abc-123", "ghcr.io/acme/llm:1.2", GPUS, {"TOKEN": "s3cret"})
    assert run_argv("nerdctl", "io.containerd.kata.v2", spec, "/state/env/f.env") == [
        "nerdctl",
        "run",
        "-d",
        "--runtime",
        "io.containerd.kata.v2",
        "--name",
        "replica-abc-123",
        "--label",
        "vectorlay.replica-id=abc-123",
        "--label",
        "vectorlay.gpus=0000:17:00.0+0000:2a:00.0",
        "--device",
        "/dev/vfio/25",
        "--device",
        "/dev/vfio/31",
        "--env-file",
        "/state/env/f.env",
        "ghcr.io/acme/llm:1.2",
    ]


def test_run_command_line_without_gpus_or_env() -> None:
    spec = ContainerSpec("r1", "nginx:1.27")
    argv = run_argv("/usr/local/bin/nerdctl", "io.containerd.runc.v2", spec, None)
    assert argv == [
        "/usr/local/bin/nerdctl",
        "run",
        "-d",
        "--runtime",
        "io.containerd.runc.v2",
        "--name",
        "replica-r1",
        "--label",
        "vectorlay.replica-id=r1",
        "nginx:1.27",
    ]


def test_other_command_lines() -> None:
    assert ps_argv("nerdctl") == [
        "nerdctl",
        "ps",
        "-a",
        "--no-trunc",
        "--format",
        "{{json .}}",
        "--filter",
        "label=vectorlay.replica-id",
    ]
    assert inspect_argv("nerdctl", ["c1", "c2"]) == [
        "nerdctl",
        "inspect",
        "--type",
        "container",
        "c1",
        "c2",
    ]
    assert stop_argv("nerdctl", "replica-a", 30.0) == ["nerdctl", "stop", "-t", "30", "replica-a"]
    assert rm_argv("nerdctl", "replica-a") == ["nerdctl", "rm", "-f", "replica-a"]
    assert events_argv("nerdctl") == ["nerdctl", "events", "--format", "{{json .}}"]


@pytest.mark.parametrize(
    ("grace", "seconds"),
    [(30.0, 30), (0.2, 1), (1.5, 2), (0.0, 0), (-3.0, 0), (math.inf, 0), (math.nan, 0)],
)
def test_grace_in_whole_seconds(grace: float, seconds: int) -> None:
    assert grace_seconds(grace) == seconds


@pytest.mark.parametrize(
    "spec",
    [
        ContainerSpec("-rm", "nginx"),
        ContainerSpec("ok", "--privileged"),
        ContainerSpec("ok", "nginx", (GpuSlot("0000:17:00.0,x", "25"),)),
        ContainerSpec("ok", "nginx", (GpuSlot("0000:17:00.0", "25/../../sda"),)),
        ContainerSpec("ok", "nginx", (GpuSlot("0000:17:00.0", ""),)),
    ],
)
def test_specs_that_must_not_reach_argv(spec: ContainerSpec) -> None:
    with pytest.raises(ContainerRuntimeError):
        check_spec(spec)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"nerdctl": ""},
        {"oci_runtime": "--privileged"},
        {"oci_runtime": ""},
        {"oci_runtime": "io.containerd.kata.v2 --x"},
        {"call_timeout": 0.0},
        {"run_timeout": -1.0},
        {"max_concurrency": 0},
        {"watch": "inotify"},
    ],
)
def test_unusable_settings_are_refused(tmp_path: Path, kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        NerdctlRuntime(env_dir=tmp_path / "env", **kwargs)  # type: ignore[arg-type]


def test_env_dir_path_must_survive_nerdctls_list_parsing(tmp_path: Path) -> None:
    # --env-file is a comma-separated (CSV) list for nerdctl.
    for name in ("a,b", 'a"b'):
        with pytest.raises(ConfigError, match="no commas or quotes"):
            NerdctlRuntime(env_dir=tmp_path / name)


def test_env_dir_is_created_private(tmp_path: Path) -> None:
    env_dir = tmp_path / "state" / "env"
    NerdctlRuntime(env_dir=env_dir)
    assert stat.S_IMODE(env_dir.stat().st_mode) == 0o700


def test_env_dir_is_tightened_and_leftovers_removed(tmp_path: Path) -> None:
    env_dir = tmp_path / "env"
    env_dir.mkdir()
    os.chmod(env_dir, 0o750)  # noqa: S103 - the loose mode under test
    leftover = env_dir / "replica-a.0123.env"
    leftover.write_text("TOKEN=from-a-crashed-agent\n")
    prepare_env_dir(env_dir)
    assert stat.S_IMODE(env_dir.stat().st_mode) == 0o700
    assert list(env_dir.iterdir()) == []


def test_env_dir_must_be_a_directory(tmp_path: Path) -> None:
    target = tmp_path / "real"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    (tmp_path / "file").write_text("")
    for path in (tmp_path / "link", tmp_path / "file"):
        with pytest.raises(ConfigError):
            prepare_env_dir(path)


def test_a_gpu_in_a_vmd_domain_is_accepted() -> None:
    spec = ContainerSpec("r1", "nginx", (GpuSlot("10000:e1:00.0", "77"),))
    check_spec(spec)
