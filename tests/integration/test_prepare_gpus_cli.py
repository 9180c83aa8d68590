"""``vectorlay-agent prepare-gpus`` as an operator runs it: a separate process on a fake tree.

The tree here has no "kernel" behind it (plain files), so every write is
accepted and nothing is bound: exactly the bind that "succeeds" while the
device stays where it was.  The command must see through it (exit 1, the
device reported with its driver), and must load vfio-pci with the
``modprobe`` it finds on ``PATH`` first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import vectorlay_argv
from tests.support.gpukernel import FakeKernel, audio, gpu

pytestmark = pytest.mark.integration

GPU = "0000:01:00.0"
AUDIO = "0000:01:00.1"
FAKE_MODPROBE = """#!/bin/sh
echo "modprobe $*" >> "$HOST_SYS/../modprobe.log"
mkdir -p "$HOST_SYS/bus/pci/drivers/vfio-pci"
: > "$HOST_SYS/bus/pci/drivers/vfio-pci/unbind"
"""


def run(kernel: FakeKernel, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    modprobe = bin_dir / "modprobe"
    modprobe.write_text(FAKE_MODPROBE)
    modprobe.chmod(0o755)
    env = {**kernel.env(), "PATH": os.pathsep.join([str(bin_dir), "/usr/bin", "/bin"])}
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return subprocess.run(
        vectorlay_argv("prepare-gpus", *args),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        executable=sys.executable,
    )


def test_plan_then_an_apply_that_does_not_take(tmp_path: Path) -> None:
    kernel = FakeKernel(
        tmp_path / "host", [gpu(GPU, None, "1"), audio(AUDIO, group="1")], loaded=()
    )
    plan = run(kernel, tmp_path, "--json")
    assert plan.returncode == 1, plan.stderr
    assert json.loads(plan.stdout)["binds"] == 2

    done = run(kernel, tmp_path, "--apply", "--json", "--log-level", "info")
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert (tmp_path / "host" / "modprobe.log").read_text() == "modprobe vfio-pci\n"
    first = report["results"][0]
    assert first["ok"] is False
    assert first["detail"] == "did not bind to vfio-pci: now on no driver"
    assert report["results"][1]["detail"].startswith("not attempted")
    # Every write is in the log, with the address, the file and the value.
    assert f"{GPU}: write 'vfio-pci' to {kernel.sys}/bus/pci/devices/{GPU}/driver_override" in (
        done.stderr
    )


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    kernel = FakeKernel(tmp_path / "host", [gpu(GPU, None, "1")])
    for args in (["--gpu", "nonsense"], ["--root", str(tmp_path)], ["--gpu", "0000:09:00.0"]):
        done = run(kernel, tmp_path, *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert done.stderr.strip(), args
