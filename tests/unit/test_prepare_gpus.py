"""``prepare-gpus`` on fake hosts whose kernel binds like Linux, and ``check`` agreeing afterwards.

Each scenario runs the command as the CLI does (``prepare_gpus.main``, on
both anyio backends), then ``--apply`` a second time (a no-op), then probes
the same tree the way ``check`` does and asks the one viability rule
whether the GPUs are assignable.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.support.gpukernel import (
    AMD_CPUINFO,
    INTEL_CPUINFO,
    MODPROBE_NOT_FOUND,
    Device,
    FakeKernel,
    audio,
    gpu,
    root_port,
)
from vectorlay.adapters.probe.host import HostProbe
from vectorlay.adapters.probe.iommu import read_groups, vfio_device_present
from vectorlay.app.agent import prepare_gpus
from vectorlay.app.agent.settings import PrepareGpusSettings
from vectorlay.domain.agent.passthrough import is_assignable

GPU = "0000:01:00.0"
AUDIO = "0000:01:00.1"
PORT = "0000:00:01.0"
GPU2 = "0000:02:00.0"
AUDIO2 = "0000:02:00.1"
OVERRIDE = "bus/pci/devices/{}/driver_override"
PROBE = "bus/pci/drivers_probe"


@pytest.fixture(params=["asyncio", "trio"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def no_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # check's probe finds GPUs in sysfs when lspci is not on PATH.
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def run(
    kernel: FakeKernel, backend: str, *, apply: bool = False, gpus: Sequence[str] = ()
) -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    settings = PrepareGpusSettings(apply=apply, json=True, gpus=tuple(gpus), backend=backend)
    code = prepare_gpus.main(
        settings, env=kernel.env(), sysfs=kernel, load_module=kernel.modprobe, out=out
    )
    return code, json.loads(out.getvalue())


def apply_twice(
    kernel: FakeKernel, backend: str, gpus: Sequence[str] = ()
) -> tuple[int, dict[str, Any]]:
    """``--apply``; then a second ``--apply`` must write nothing and exit 0."""
    code, report = run(kernel, backend, apply=True, gpus=gpus)
    writes = len(kernel.writes)
    again, second = run(kernel, backend, apply=True, gpus=gpus)
    if code == 0:
        assert again == 0
        assert second["binds"] == 0
        assert len(kernel.writes) == writes  # idempotent: not one write
    return code, report


def check_assignable(kernel: FakeKernel, tmp_path: Path) -> set[str]:
    """The GPUs ``check``'s probe reports on vfio-pci in a viable group with its /dev/vfio node."""
    probe = HostProbe(
        data_path=tmp_path, host_sys=kernel.sys, host_proc=kernel.proc, host_dev=kernel.dev
    )
    report = anyio.run(probe.report)
    groups = read_groups(kernel.sys)
    found = set()
    for g in report.hardware.gpus:
        group = groups.get(g.iommu_group) if g.iommu_group else None
        ok = is_assignable(
            driver=g.driver,
            group=group,
            vfio_device_present=bool(g.iommu_group)
            and vfio_device_present(kernel.dev, g.iommu_group or ""),
            health_failed=False,
        )
        assert g.assignable == ok  # check's own verdict agrees
        if ok:
            found.add(g.pci_address)
    return found


def actions(report: dict[str, Any]) -> dict[str, str]:
    return {d["address"]: d["action"] for d in report["devices"]}


pytestmark = pytest.mark.usefixtures("no_tools")


def test_a_gpu_alone_in_its_group(tmp_path: Path, backend: str) -> None:
    kernel = FakeKernel(tmp_path / "host", [gpu(GPU, None, "1")])
    code, plan = run(kernel, backend)
    assert (code, actions(plan), plan["assignable_after"]) == (1, {GPU: "bind"}, {"1": [GPU]})
    assert kernel.writes == []  # the plan changes nothing

    code, report = apply_twice(kernel, backend)
    assert code == 0
    assert kernel.writes == [(OVERRIDE.format(GPU), "vfio-pci"), (PROBE, GPU)]
    assert report["results"][0] | {"detail": ""} == {
        "address": GPU,
        "iommu_group": "1",
        "ok": True,
        "driver": "vfio-pci",
        "detail": "",
    }
    assert report["assignable_now"] == {"1": [GPU]}
    assert check_assignable(kernel, tmp_path) == {GPU}
    assert run(kernel, backend)[0] == 0  # the plan now has nothing to do


def test_gpu_with_hd_audio_on_snd_hda_intel(tmp_path: Path, backend: str) -> None:
    kernel = FakeKernel(tmp_path / "host", [gpu(GPU, "vfio-pci", "1"), audio(AUDIO, group="1")])
    assert check_assignable(kernel, tmp_path) == set()  # the audio function spoils the group
    code, plan = run(kernel, backend)
    assert (code, actions(plan)) == (1, {GPU: "ok", AUDIO: "bind"})
    code, _ = apply_twice(kernel, backend)
    assert code == 0
    assert kernel.writes == [
        (OVERRIDE.format(AUDIO), "vfio-pci"),
        ("bus/pci/drivers/snd_hda_intel/unbind", AUDIO),
        (PROBE, AUDIO),
    ]
    assert kernel.drivers() == {GPU: "vfio-pci", AUDIO: "vfio-pci"}
    assert check_assignable(kernel, tmp_path) == {GPU}


def test_two_gpus_in_one_group(tmp_path: Path, backend: str) -> None:
    # The Intel x16/x8 listing: both GPUs and their audio share group 1.
    devices = [gpu(GPU, None, "1"), audio(AUDIO, group="1"), gpu(GPU2, None, "1")]
    kernel = FakeKernel(tmp_path / "host", [*devices, audio(AUDIO2, group="1")])
    code, plan = run(kernel, backend)
    assert code == 1
    assert set(actions(plan).values()) == {"bind"}
    assert plan["assignable_after"] == {"1": [GPU, GPU2]}
    assert apply_twice(kernel, backend)[0] == 0
    assert check_assignable(kernel, tmp_path) == {GPU, GPU2}


def test_a_pcieport_bridge_in_the_group_stays(tmp_path: Path, backend: str) -> None:
    devices = [root_port(PORT, "2"), gpu(GPU, None, "2"), audio(AUDIO, group="2")]
    kernel = FakeKernel(tmp_path / "host", devices)
    code, plan = run(kernel, backend)
    assert code == 1
    assert actions(plan) == {PORT: "ok", GPU: "bind", AUDIO: "bind"}
    assert apply_twice(kernel, backend)[0] == 0
    assert kernel.driver(PORT) == "pcieport"
    assert not any(PORT in value or PORT in path for path, value in kernel.writes)
    assert check_assignable(kernel, tmp_path) == {GPU}


def test_the_console_gpu_is_left_alone_unless_named(tmp_path: Path, backend: str) -> None:
    devices = [gpu(GPU, None, "1", boot_vga=True), audio(AUDIO, group="1")]
    kernel = FakeKernel(tmp_path / "host", devices)
    code, report = apply_twice(kernel, backend)
    assert code == 0  # skipped GPUs do not count
    assert actions(report) == {GPU: "skip", AUDIO: "skip"}
    assert "drives the console" in report["skipped"][0]["reason"]
    assert kernel.writes == []
    code, _ = apply_twice(kernel, backend, gpus=[GPU])
    assert code == 0
    assert check_assignable(kernel, tmp_path) == {GPU}


@pytest.mark.parametrize("named", [False, True])
def test_a_gpu_on_nvidia(tmp_path: Path, backend: str, named: bool) -> None:
    devices = [gpu(GPU, "nvidia", "1"), audio(AUDIO, group="1"), gpu(GPU2, None, "2")]
    kernel = FakeKernel(tmp_path / "host", devices)
    code, report = apply_twice(kernel, backend, gpus=[GPU] if named else [])
    assert code == 0
    if named:
        # --gpu limits the run to the named GPU's group: GPU2 is not touched.
        assert actions(report) == {GPU: "bind", AUDIO: "bind"}
        assert ("bus/pci/drivers/nvidia/unbind", GPU) in kernel.writes
        assert check_assignable(kernel, tmp_path) == {GPU}
    else:
        assert actions(report) == {GPU: "skip", AUDIO: "skip", GPU2: "bind"}
        assert kernel.driver(GPU) == "nvidia"
        assert check_assignable(kernel, tmp_path) == {GPU2}


@pytest.mark.parametrize(
    ("cpuinfo", "parameters"),
    [(None, "intel_iommu=on iommu=pt"), (AMD_CPUINFO, "amd_iommu=on iommu=pt")],
)
def test_iommu_off_stops_with_the_kernel_parameters(
    tmp_path: Path, backend: str, cpuinfo: Path | None, parameters: str
) -> None:
    devices = [gpu(GPU), audio(AUDIO)]
    kernel = FakeKernel(tmp_path / "host", devices, cpuinfo=cpuinfo or INTEL_CPUINFO)
    for apply in (False, True):
        code, report = run(kernel, backend, apply=apply)
        assert code == 1
        assert report["kernel_parameters"] == parameters
        assert report["iommu"] is False
    assert kernel.writes == []
    out = io.StringIO()
    prepare_gpus.main(PrepareGpusSettings(apply=True), env=kernel.env(), sysfs=kernel, out=out)
    assert f"Add `{parameters}` to the kernel command line" in out.getvalue()


def test_vfio_pci_not_loaded_is_loaded_first(tmp_path: Path, backend: str) -> None:
    kernel = FakeKernel(tmp_path / "host", [gpu(GPU, None, "1")], loaded=())
    assert not kernel.driver_loaded("vfio-pci")
    assert run(kernel, backend)[0] == 1
    assert kernel.modprobes == []  # the plan loads nothing
    code, _ = apply_twice(kernel, backend)
    assert code == 0
    assert kernel.modprobes == ["vfio-pci"]
    assert check_assignable(kernel, tmp_path) == {GPU}


def test_vfio_pci_that_cannot_be_loaded_stops_before_any_write(
    tmp_path: Path, backend: str
) -> None:
    kernel = FakeKernel(tmp_path / "host", [gpu(GPU, None, "1")], loaded=())
    kernel.modprobe_fails = True
    code, report = run(kernel, backend, apply=True)
    assert code == 1
    assert MODPROBE_NOT_FOUND in report["problem"]
    assert kernel.writes == []


def test_a_bind_that_silently_does_not_take_is_reported(tmp_path: Path, backend: str) -> None:
    # The host driver takes the audio function back; every write is accepted.
    devices = [gpu(GPU, None, "1"), audio(AUDIO, group="1"), gpu(GPU2, None, "2")]
    kernel = FakeKernel(tmp_path / "host", devices, refuse={AUDIO: "snd_hda_intel"})
    code, report = run(kernel, backend, apply=True)
    assert code == 1
    results = {r["address"]: r for r in report["results"]}
    assert results[GPU]["ok"]
    assert results[GPU2]["ok"]
    assert not results[AUDIO]["ok"]
    assert results[AUDIO]["driver"] == "snd_hda_intel"
    assert "did not bind to vfio-pci: now on snd_hda_intel" in results[AUDIO]["detail"]
    assert kernel.override(AUDIO) == "(null)\n"  # given back, not left pinned
    assert report["assignable_now"] == {"2": [GPU2]}
    assert check_assignable(kernel, tmp_path) == {GPU2}
    # Still not done: the next run tries again and says so again.
    assert run(kernel, backend, apply=True)[0] == 1


def test_a_gpu_left_driverless_stops_its_group(tmp_path: Path, backend: str) -> None:
    devices = [gpu(GPU, None, "1"), audio(AUDIO, group="1")]
    kernel = FakeKernel(tmp_path / "host", devices, refuse={GPU: None})
    code, report = run(kernel, backend, apply=True)
    assert code == 1
    results = {r["address"]: r for r in report["results"]}
    assert "now on no driver" in results[GPU]["detail"]
    assert results[AUDIO]["detail"].startswith("not attempted")
    assert kernel.driver(AUDIO) == "snd_hda_intel"  # never half a group


def test_every_write_is_logged(
    tmp_path: Path, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    kernel = FakeKernel(tmp_path / "host", [gpu(GPU, None, "1"), audio(AUDIO, group="1")])
    with caplog.at_level(logging.INFO, logger="vectorlay.prepare_gpus"):
        run(kernel, backend, apply=True)
    writes = [r.getMessage() for r in caplog.records if "write" in r.getMessage()]
    assert len(writes) == len(kernel.writes) == 5
    assert writes[0] == f"{GPU}: write 'vfio-pci' to {kernel.sys}/{OVERRIDE.format(GPU)}"


def test_the_human_table(tmp_path: Path) -> None:
    devices: list[Device] = [root_port(PORT, "1"), gpu(GPU, "nvidia", "1"), audio(AUDIO, group="1")]
    kernel = FakeKernel(tmp_path / "host", devices)
    out = io.StringIO()
    code = prepare_gpus.main(PrepareGpusSettings(), env=kernel.env(), sysfs=kernel, out=out)
    text = out.getvalue()
    assert code == 0
    assert "GROUP  PCI ADDRESS   KIND  CLASS  DRIVER         ACTION  REASON" in text
    assert f"1      {GPU}  GPU   0300   nvidia         skip    {GPU} is on the host driver" in text
    assert f"  skipped {GPU}: {GPU} is on the host driver nvidia; name it with --gpu" in text
    assert "Afterwards: 0 GPU(s) assignable" in text


def test_the_human_report_of_a_bind_that_did_not_take(tmp_path: Path) -> None:
    kernel = FakeKernel(tmp_path / "host", [gpu(GPU, None, "1")], refuse={GPU: None})
    out = io.StringIO()
    settings = PrepareGpusSettings(apply=True)
    code = prepare_gpus.main(settings, env=kernel.env(), sysfs=kernel, out=out)
    text = out.getvalue()
    assert code == 1
    assert f"  {GPU}  1      FAILED  (none)      did not bind to vfio-pci: now on no driver" in text
    assert "Now: 0 GPU(s) assignable" in text
    assert "1 device(s) not on vfio-pci: see DETAIL above" in text
