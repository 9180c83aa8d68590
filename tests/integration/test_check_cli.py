"""``vectorlay-agent check`` as an operator runs it, on a fake host.

Each test starts the real CLI (``python -m vectorlay check``) as a separate
process with a fake host: fake programs alone on ``PATH`` and fake
``HOST_PROC``/``HOST_SYS`` trees (tests/fakes/host/).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import msgspec
import pytest

from tests.fakes.host.fakehost import (
    AUDIO_ON_HOST,
    EXPECTED_VERSIONS,
    GPU_A,
    GPU_B,
    HOSTNAME,
    PASSTHROUGH,
    TOOLS,
    TWO_GPUS_ONE_GROUP,
    FakeHost,
    build_fake_host,
    running,
    set_aer_total,
)
from tests.support import vectorlay_argv
from vectorlay.domain.messages import HostReport

pytestmark = pytest.mark.integration

SRC = Path(__file__).resolve().parents[2] / "src"
# The CLI's per-command timeout (HostProbe's default).
COMMAND_TIMEOUT = 5.0


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return build_fake_host(tmp_path / "host")


def check(host: FakeHost, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = host.env({"PYTHONPATH": str(SRC), "LC_ALL": "C.UTF-8"})
    return subprocess.run(
        vectorlay_argv("check", *args),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def check_json(host: FakeHost, *args: str) -> tuple[int, HostReport]:
    done = check(host, "--json", *args)
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout  # one JSON object, one line
    return done.returncode, msgspec.json.decode(lines[0], type=HostReport)


def test_ready_host(host: FakeHost) -> None:
    code, report = check_json(host)
    assert code == 0
    assert report.ready
    assert report.hardware.hostname == HOSTNAME
    assert report.hardware.gpu_source == "lspci"
    assert [g.pci_address for g in report.hardware.gpus] == PASSTHROUGH.gpu_addresses
    assert {
        d.name: d.version for d in report.dependencies if d.name not in ("vfio", "disk")
    } == EXPECTED_VERSIONS
    disk = report.dependencies[-1]
    assert (disk.name, disk.ok) == ("disk", True)
    assert disk.detail.split(" GB free on ")[1].startswith(str(host.root / "containerd"))
    assert report.hardware.storage.path == str(host.data)
    assert report.hardware.storage.total_gb is not None


def test_ready_host_readable(host: FakeHost) -> None:
    done = check(host)
    assert done.returncode == 0, done.stderr
    assert f"on {HOSTNAME}" in done.stdout
    assert "GPUs     8, found with lspci" in done.stdout
    assert done.stdout.rstrip().endswith("READY: every dependency is ok")


@pytest.mark.parametrize("tool", TOOLS)
def test_each_dependency_missing(host: FakeHost, tool: str) -> None:
    host.remove_program(tool)
    code, report = check_json(host)
    assert code == 1
    assert not report.ready
    assert [(d.name, d.detail) for d in report.dependencies if not d.ok] == [
        (tool, "not found on PATH")
    ]
    done = check(host)
    assert done.returncode == 1
    assert f"  - {tool}: not found on PATH" in done.stdout
    assert "DEGRADED:" in done.stdout


def test_lspci_missing_sysfs_finds_every_gpu(host: FakeHost) -> None:
    _, with_lspci = check_json(host)
    host.remove_program("lspci")
    code, report = check_json(host)
    assert code == 0
    assert report.hardware.gpu_source == "sysfs"
    assert [(g.pci_address, g.driver, g.iommu_group) for g in report.hardware.gpus] == [
        (g.pci_address, g.driver, g.iommu_group) for g in with_lspci.hardware.gpus
    ]


def test_proc_modules_missing_with_built_in_vfio(host: FakeHost) -> None:
    host.remove_proc_modules()
    code, report = check_json(host)
    assert code == 1
    assert report.dependencies[-2].detail == "missing modules: vfio, vfio_pci, vfio_iommu_type1"
    host.add_builtin_modules(["vfio", "vfio_pci", "vfio_iommu_type1"])
    code, report = check_json(host)
    assert code == 0
    assert report.dependencies[-2].ok


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_hung_dependency_answers_within_its_timeout(host: FakeHost, backend: str) -> None:
    host.hang("kata-runtime")
    started = time.monotonic()
    code, report = check_json(host, "--backend", backend)
    elapsed = time.monotonic() - started
    assert code == 1
    kata = next(d for d in report.dependencies if d.name == "kata-runtime")
    assert kata.detail.endswith(f"did not answer within {COMMAND_TIMEOUT:g} s")
    assert [d.name for d in report.dependencies if not d.ok] == ["kata-runtime"]
    # One timeout plus interpreter start-up, not one timeout per command.
    assert elapsed < 2 * COMMAND_TIMEOUT
    pid = host.hung_pid("kata-runtime")
    assert pid is not None
    assert not running(pid)


def test_garbage_and_failing_versions(host: FakeHost) -> None:
    host.answer("virtiofsd", stdout=b"\x00\x1b[2J\xff garbage\n")
    host.answer(
        "containerd", stderr="containerd: error while loading shared libraries\n", status=127
    )
    code, report = check_json(host)
    assert code == 1
    failed = {d.name: d.detail for d in report.dependencies if not d.ok}
    assert set(failed) == {"virtiofsd", "containerd"}
    assert failed["virtiofsd"].startswith("unrecognised `")
    assert failed["containerd"].endswith(
        "exited with status 127: containerd: error while loading shared libraries"
    )


def test_usage_error_is_2(host: FakeHost) -> None:
    done = check(host, "--backend", "nope")
    assert done.returncode == 2
    assert done.stdout == ""


def test_disk_under_the_minimum_degrades_and_the_table_says_why(host: FakeHost) -> None:
    store = host.root / "no" / "such" / "store"
    code, report = check_json(host, "--image-store", str(store), "--min-free-gb", "99999999")
    assert code == 1
    [failed] = [d for d in report.dependencies if not d.ok]
    assert failed.name == "disk"
    assert failed.detail.endswith(
        f"free on {store} (missing; measured on {host.root}): "
        "under the 99999999 GB minimum to pull an image"
    )
    table = check(host, "--image-store", str(store), "--min-free-gb", "99999999")
    assert table.returncode == 1
    assert "  - disk: " in table.stdout
    assert "under the 99999999 GB minimum" in table.stdout


@pytest.mark.parametrize("value", ["-1", "2.5", "lots"])
def test_min_free_gb_must_be_a_whole_number(host: FakeHost, value: str) -> None:
    done = check(host, "--min-free-gb", value)
    assert done.returncode == 2
    assert "--min-free-gb: expected a whole number >= 0" in done.stderr


def test_passthrough_truth_in_json_and_table(tmp_path: Path) -> None:
    host = build_fake_host(tmp_path / "audio", AUDIO_ON_HOST)
    set_aer_total(host, GPU_B, "fatal", 9)  # an old count: history, not a fault
    code, report = check_json(host)
    assert code == 0  # readiness is the dependencies'
    gpus = {g.pci_address: g for g in report.hardware.gpus}
    assert (gpus[GPU_A].assignable, gpus[GPU_A].health, gpus[GPU_A].problems) == (
        False,
        "ok",
        ["IOMMU group 12 is not viable: 0000:05:00.1 is bound to snd_hda_intel"],
    )
    assert (gpus[GPU_B].assignable, gpus[GPU_B].health, gpus[GPU_B].problems) == (True, "ok", [])
    text = check(host).stdout
    assert "      - IOMMU group 12 is not viable: 0000:05:00.1 is bound to snd_hda_intel" in text
    assert "  1 of 2 assignable to replicas" in text
    shared = build_fake_host(tmp_path / "shared", TWO_GPUS_ONE_GROUP)
    assert "IOMMU groups holding several GPUs (assigned together): 12 (2 GPUs)" in (
        check(shared).stdout
    )
