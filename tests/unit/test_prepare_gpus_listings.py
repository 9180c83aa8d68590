"""``prepare-gpus`` on fake hosts rebuilt from real IOMMU group listings (tests/fixtures/sysfs/).

Each listing gives every function's group, class, ids and driver; the fake
kernel lays them out as sysfs and binds as Linux does.  The plan must leave
the host's own devices alone, bind exactly what the named GPUs need, and
``check``'s probe must then find those GPUs assignable.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.support.gpukernel import Device, FakeKernel
from vectorlay.adapters.probe.host import HostProbe
from vectorlay.adapters.probe.iommu import read_groups, vfio_device_present
from vectorlay.app.agent import prepare_gpus
from vectorlay.app.agent.settings import PrepareGpusSettings
from vectorlay.domain.agent.passthrough import is_assignable

LISTINGS = Path(__file__).resolve().parents[1] / "fixtures" / "sysfs" / "iommu_groups"
Z390 = LISTINGS / "z390_fpga_vfio_and_rtx_nvidia_one_group_iommu_viewer_with_drivers.txt"
HGX = LISTINGS / "hgx_h200_8gpu_nvswitches_shared_group_with_drivers_TRUNCATED.txt"
# "Group:  1   0000:02:00.0 VGA compatible controller [0300]: ... [10de:2489] ...   Driver: nvidia"
# "IOMMU Group 15: 5d:00.0 3D controller [0302]: ... [10de:2335] (rev a1) (driver: nvidia)"
LINE = re.compile(
    r"^(?:Group:|IOMMU Group)\s+(?P<group>\d+):?\s+(?P<address>[0-9a-f:.]+) "
    r".*?\[(?P<cls>[0-9a-f]{4})\]: .*\[(?P<vendor>[0-9a-f]{4}):(?P<device>[0-9a-f]{4})\]"
    r"(?:.*?(?:Driver: (?P<d1>\S+)|\(driver: (?P<d2>[^)]+)\)))?\s*$"
)


def devices_of(listing: Path) -> list[Device]:
    found = []
    for line in listing.read_text().splitlines():
        match = LINE.match(line)
        if match is None:
            continue
        address = match["address"]
        found.append(
            Device(
                address if address.count(":") == 2 else f"0000:{address}",
                f"{match['cls']}00",
                match["d1"] or match["d2"],
                match["group"],
                vendor=match["vendor"],
                device=match["device"],
            )
        )
    return found


@pytest.fixture(autouse=True)
def no_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def run(kernel: FakeKernel, *, apply: bool, gpus: tuple[str, ...] = ()) -> tuple[int, Any]:
    out = io.StringIO()
    settings = PrepareGpusSettings(apply=apply, json=True, gpus=gpus)
    code = prepare_gpus.main(
        settings, env=kernel.env(), sysfs=kernel, load_module=kernel.modprobe, out=out
    )
    return code, json.loads(out.getvalue())


def assignable(kernel: FakeKernel, tmp_path: Path) -> set[str]:
    report = anyio.run(
        HostProbe(
            data_path=tmp_path, host_sys=kernel.sys, host_proc=kernel.proc, host_dev=kernel.dev
        ).report
    )
    groups = read_groups(kernel.sys)
    by_rule = {
        g.pci_address
        for g in report.hardware.gpus
        if g.iommu_group
        and is_assignable(
            driver=g.driver,
            group=groups.get(g.iommu_group),
            vfio_device_present=vfio_device_present(kernel.dev, g.iommu_group),
            health_failed=False,
        )
    }
    by_check = {g.pci_address for g in report.hardware.gpus if g.assignable}
    assert by_check == by_rule  # check and prepare-gpus judge groups alike
    return by_check


def test_the_listings_are_read_whole() -> None:
    assert len(devices_of(Z390)) == 9
    hgx = devices_of(HGX)
    assert len(hgx) == 10
    assert {d.driver for d in hgx} == {"nvidia", "nvidia-nvswitch"}


def test_z390_fpga_on_vfio_and_rtx_on_nvidia_in_one_group(tmp_path: Path) -> None:
    kernel = FakeKernel(tmp_path / "host", devices_of(Z390))
    code, report = run(kernel, apply=True)
    assert code == 0
    assert report["skipped"][0]["address"] == "0000:02:00.0"
    assert kernel.writes == []  # the RTX is on nvidia and was not named

    code, report = run(kernel, apply=True, gpus=("0000:02:00.0",))
    assert code == 0
    assert {d["address"]: d["action"] for d in report["devices"]} == {
        "0000:00:01.0": "ok",  # root ports stay on pcieport
        "0000:00:01.1": "ok",
        "0000:01:00.0": "ok",  # the FPGA already on vfio-pci
        "0000:01:00.1": "ok",
        "0000:02:00.0": "bind",
        "0000:02:00.1": "bind",
    }
    assert kernel.driver("0000:00:02.0") == "i915"  # the iGPU (console) untouched
    assert assignable(kernel, tmp_path) == {"0000:02:00.0"}


def test_hgx_h200_eight_gpus_on_nvidia(tmp_path: Path) -> None:
    kernel = FakeKernel(tmp_path / "host", devices_of(HGX))
    gpus = tuple(sorted(d.address for d in devices_of(HGX) if d.class_code == "030200"))
    assert len(gpus) == 8
    assert run(kernel, apply=False)[0] == 0  # all on nvidia, none named: nothing to do
    code, report = run(kernel, apply=True, gpus=gpus)
    assert code == 0
    assert len(report["results"]) == 8
    assert all(r["ok"] for r in report["results"])
    assert kernel.driver("0000:05:00.0") == "nvidia-nvswitch"  # its own group, not touched
    assert assignable(kernel, tmp_path) == set(gpus)
