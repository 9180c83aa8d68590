"""Dependency versions from real ``--version`` output, and every way a tool can fail."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from vectorlay.adapters.commands import CommandResult
from vectorlay.adapters.probe.versions import (
    check_tool,
    dependency_from_result,
    locate,
    parse_version,
)

VERSIONS = Path(__file__).resolve().parent.parent / "fixtures" / "versions"


@pytest.mark.parametrize(
    ("tool", "fixture", "expected"),
    [
        ("containerd", "containerd_--version_v1.7.3.txt", "1.7.3"),
        ("containerd", "containerd_--version_v2.2.1.txt", "2.2.1"),  # /v2 module path
        ("nerdctl", "nerdctl_--version_1.5.0.txt", "1.5.0"),
        ("nerdctl", "nerdctl_--version_2.2.1.txt", "2.2.1"),
        ("kata-runtime", "kata_runtime_--version_3.0.0.txt", "3.0.0"),
        ("kata-runtime", "kata_runtime_--version_3.6.0_reported_by_3.7.0_tarball.txt", "3.6.0"),
        ("kata-runtime", "kata_runtime_--version_1.10.0-rc0.txt", "1.10.0-rc0"),
        ("kata-runtime", "kata_runtime_--version_1.12.0-rc0_commit_unknown.txt", "1.12.0-rc0"),
        ("virtiofsd", "virtiofsd_--version_rust_1.14.0.txt", "1.14.0"),
        ("virtiofsd", "virtiofsd_--version_rust_1.7.0_debian12_says_backend.txt", "1.7.0"),
        ("virtiofsd", "virtiofsd_--version_legacy_C_qemu_6.2.0_ubuntu2204.txt", "6.2.0"),
    ],
)
def test_real_version_output(tool: str, fixture: str, expected: str) -> None:
    assert parse_version(tool, (VERSIONS / fixture).read_text()) == expected


@pytest.mark.parametrize(
    ("tool", "fixture"),
    [
        # The `version` subcommand's block is not `--version`'s answer.
        ("nerdctl", "nerdctl_version_v1.6.2-dev_containerd_1.7.1.txt"),
        # Kata's shim and its predecessor's runtime are other programs.
        ("kata-runtime", "containerd-shim-kata-v2_--version_3.0.0.txt"),
        ("kata-runtime", "cc_runtime_version_subcommand_3.0.0-beta.2_kata_predecessor.txt"),
        # One tool's answer is not another's.
        ("containerd", "nerdctl_--version_2.2.1.txt"),
        ("virtiofsd", "kata_runtime_--version_3.0.0.txt"),
    ],
)
def test_other_programs_output_is_not_recognised(tool: str, fixture: str) -> None:
    assert parse_version(tool, (VERSIONS / fixture).read_text()) is None


@pytest.mark.parametrize(
    ("tool", "text", "expected"),
    [
        (
            "containerd",
            "containerd containerd.io 1.7.25 bcc810d6b9066471b0b6fa75f557a15a1cbf31bb\n",
            "1.7.25",
        ),
        ("containerd", "containerd github.com/containerd/containerd 1.7.24\n", "1.7.24"),
        ("nerdctl", "\n\nnerdctl version v1.6.2-29-g35966845\n", "1.6.2-29-g35966845"),
        # Name and version alone, as other builds print them.
        ("containerd", "containerd 1.7.2\n", "1.7.2"),
        ("nerdctl", "nerdctl v1.5.0\n", "1.5.0"),
        ("kata-runtime", "kata-runtime 3.2.0\n", "3.2.0"),
        ("kata-runtime", "kata-runtime version: 3.2.0\ncommit: abc\n", "3.2.0"),
        ("virtiofsd", "/usr/libexec/virtiofsd 1.10.1\n", "1.10.1"),
        ("containerd", "", None),
        ("containerd", "containerd-shim 1.7.2\n", None),
        ("kata-runtime", "Kata Containers kata-runtime 3.2.0 is great\n", None),
        ("nerdctl", "nerdctl 1.5.0 2.0.0garbage\n", "1.5.0"),
        ("containerd", "containerd\n", None),
        ("nerdctl", "nerdctl version\n", None),
        ("nerdctl", "nerdctl version 2\n", None),
        ("kata-runtime", "kata-runtime : 3.0.0" + "x" * 100, None),
        ("virtiofsd", "\x00\xff\xfe virtiofsd 1.0.0", None),
        ("virtiofsd", "Segmentation fault\n", None),
    ],
)
def test_version_edge_cases(tool: str, text: str, expected: str | None) -> None:
    assert parse_version(tool, text) == expected


# --- locating a program --------------------------------------------------------------


def executable(folder: Path, name: str, body: str = "echo hi", mode: int = 0o755) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(mode)
    return path


def test_locate_follows_path_order(tmp_path: Path) -> None:
    first = executable(tmp_path / "a", "containerd")
    executable(tmp_path / "b", "containerd")
    path_env = os.pathsep.join([str(tmp_path / "empty"), str(tmp_path / "a"), str(tmp_path / "b")])
    assert locate("containerd", path_env).path == str(first)


def test_locate_missing_and_not_executable(tmp_path: Path) -> None:
    assert locate("containerd", str(tmp_path)).problem == "not found on PATH"
    plain = executable(tmp_path / "a", "containerd", mode=0o644)
    found = locate("containerd", str(tmp_path / "a"))
    assert found.path is None
    assert found.problem == f"{plain} is not an executable file"
    (tmp_path / "d" / "containerd").mkdir(parents=True)
    assert "not an executable file" in locate("containerd", str(tmp_path / "d")).problem


def test_locate_skips_non_executable_for_a_later_one(tmp_path: Path) -> None:
    executable(tmp_path / "a", "nerdctl", mode=0o644)
    good = executable(tmp_path / "b", "nerdctl")
    assert locate("nerdctl", f"{tmp_path / 'a'}:{tmp_path / 'b'}").path == str(good)


def test_locate_configured_path(tmp_path: Path) -> None:
    tool = executable(tmp_path / "opt", "nerdctl")
    assert locate(str(tool), "").path == str(tool)
    missing = locate(str(tmp_path / "nope" / "nerdctl"), "/usr/bin")
    assert missing.problem == f"not found: {tmp_path / 'nope' / 'nerdctl'}"


def test_locate_ignores_empty_path_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    executable(tmp_path, "containerd")
    monkeypatch.chdir(tmp_path)
    assert locate("containerd", ":").path is None


# --- running --version -----------------------------------------------------------------


async def test_check_tool_reads_the_version(tmp_path: Path) -> None:
    fixture = VERSIONS / "kata_runtime_--version_3.0.0.txt"
    executable(tmp_path, "kata-runtime", f'[ "$1" = --version ] || exit 9\ncat "{fixture}"')
    dep = await check_tool("kata-runtime", "kata-runtime", path_env=str(tmp_path), timeout=5)
    assert (dep.name, dep.ok, dep.version, dep.detail) == ("kata-runtime", True, "3.0.0", "")


async def test_check_tool_missing(tmp_path: Path) -> None:
    dep = await check_tool("virtiofsd", "virtiofsd", path_env=str(tmp_path), timeout=5)
    assert (dep.ok, dep.version, dep.detail) == (False, None, "not found on PATH")


async def test_check_tool_hang_is_bounded(tmp_path: Path) -> None:
    executable(tmp_path, "kata-runtime", "exec sleep 600")
    started = time.monotonic()
    dep = await check_tool("kata-runtime", "kata-runtime", path_env=str(tmp_path), timeout=0.3)
    assert time.monotonic() - started < 5
    assert not dep.ok
    assert dep.detail == f"`{tmp_path}/kata-runtime --version` did not answer within 0.3 s"


async def test_check_tool_garbage(tmp_path: Path) -> None:
    executable(tmp_path, "containerd", r"printf '\033[2J\377\376 oops\n'")
    dep = await check_tool("containerd", "containerd", path_env=str(tmp_path), timeout=5)
    assert not dep.ok
    assert dep.detail.startswith(f"unrecognised `{tmp_path}/containerd --version` output: ")
    assert "\x1b" not in dep.detail
    assert "\n" not in dep.detail


async def test_check_tool_nonzero_exit(tmp_path: Path) -> None:
    executable(
        tmp_path,
        "nerdctl",
        'echo "nerdctl version 2.2.1"; echo "time=x level=fatal msg=boom" >&2; exit 3',
    )
    dep = await check_tool("nerdctl", "nerdctl", path_env=str(tmp_path), timeout=5)
    assert not dep.ok
    assert dep.detail == (
        f"`{tmp_path}/nerdctl --version` exited with status 3: time=x level=fatal msg=boom"
    )


async def test_check_tool_cannot_exec(tmp_path: Path) -> None:
    tool = tmp_path / "virtiofsd"
    tool.write_bytes(b"\x7fELF\x00\x00not really")
    tool.chmod(0o755)
    dep = await check_tool("virtiofsd", "virtiofsd", path_env=str(tmp_path), timeout=5)
    assert not dep.ok
    assert dep.detail == f"cannot run {tool}: Exec format error"


async def test_check_tool_endless_output_is_capped(tmp_path: Path) -> None:
    executable(tmp_path, "containerd", "exec yes containerd")
    dep = await check_tool("containerd", "containerd", path_env=str(tmp_path), timeout=10)
    assert not dep.ok
    assert dep.detail.endswith("printed more than 64 KiB")


async def test_version_on_stderr_only_is_read(tmp_path: Path) -> None:
    executable(tmp_path, "virtiofsd", 'echo "virtiofsd version 6.2.0 (Debian)" >&2')
    dep = await check_tool("virtiofsd", "virtiofsd", path_env=str(tmp_path), timeout=5)
    assert (dep.ok, dep.version) == (True, "6.2.0")


def test_empty_output_detail() -> None:
    dep = dependency_from_result("containerd", "/x/containerd", CommandResult(0), timeout=5)
    assert dep.detail == "`/x/containerd --version` printed nothing"
