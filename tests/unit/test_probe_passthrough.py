"""The probe's assignable/health/problems on fake hosts, and their cheap re-read."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes.host.fakehost import (
    AUDIO_ON_HOST,
    BRIDGE_IN_GROUP,
    DUAL_VFIO,
    GPU_A,
    GPU_B,
    TWO_GPUS_ONE_GROUP,
    VARIANT_DRIVER,
    FakeHost,
    Profile,
    build_fake_host,
    fall_off_bus,
    remove_vfio_node,
    set_aer_total,
    set_health_file,
    vanish,
)
from vectorlay.adapters.probe.host import HostProbe
from vectorlay.domain.messages import Gpu


def make(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, profile: Profile) -> FakeHost:
    host = build_fake_host(tmp_path / "host", profile)
    monkeypatch.setenv("PATH", host.path_env)
    return host


def probe(host: FakeHost) -> HostProbe:
    return HostProbe(data_path=host.data, host_proc=host.proc, host_sys=host.sys, host_dev=host.dev)


def by_address(gpus: list[Gpu]) -> dict[str, Gpu]:
    return {g.pci_address: g for g in gpus}


async def test_two_gpus_in_one_group_are_both_assignable_in_group_12(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = make(tmp_path, monkeypatch, TWO_GPUS_ONE_GROUP)
    gpus = by_address((await probe(host).report()).hardware.gpus)
    assert [(g.iommu_group, g.assignable, g.health, g.problems) for g in gpus.values()] == [
        ("12", True, "ok", []),
        ("12", True, "ok", []),
    ]


@pytest.mark.parametrize("profile", [BRIDGE_IN_GROUP, VARIANT_DRIVER, DUAL_VFIO])
async def test_viable_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, profile: Profile
) -> None:
    host = make(tmp_path, monkeypatch, profile)
    gpus = (await probe(host).report()).hardware.gpus
    assert [(g.assignable, g.problems) for g in gpus] == [(True, []), (True, [])]


async def test_audio_on_the_host_driver_spoils_its_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = make(tmp_path, monkeypatch, AUDIO_ON_HOST)
    report = await probe(host).report()
    gpus = by_address(report.hardware.gpus)
    assert gpus[GPU_A].assignable is False
    assert gpus[GPU_A].health == "ok"
    assert gpus[GPU_A].problems == [
        "IOMMU group 12 is not viable: 0000:05:00.1 is bound to snd_hda_intel"
    ]
    assert gpus[GPU_B].assignable is True
    assert report.ready  # readiness is about dependencies, not GPUs


async def test_a_missing_vfio_node_makes_the_gpu_unassignable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = make(tmp_path, monkeypatch, DUAL_VFIO)
    remove_vfio_node(host, "13")
    gpus = by_address((await probe(host).report()).hardware.gpus)
    assert gpus[GPU_B].assignable is False
    assert gpus[GPU_B].problems == ["/dev/vfio/13 is missing"]


async def test_health_changes_are_seen_by_the_cheap_reread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = make(tmp_path, monkeypatch, DUAL_VFIO)
    p = probe(host)
    set_aer_total(host, GPU_A, "fatal", 2)  # before the start: history, not a fault
    await p.report()
    calls = len(host.calls())

    async def state() -> dict[str, tuple[bool | None, str, list[str]]]:
        return {g.pci_address: (g.assignable, g.health, g.problems) for g in await p.gpus()}

    assert (await state())[GPU_A] == (True, "ok", [])
    set_aer_total(host, GPU_A, "fatal", 3)
    assert (await state())[GPU_A] == (
        False,
        "failed",
        [f"{GPU_A} reported 1 fatal PCIe error(s) (AER) since start"],
    )
    set_health_file(host, GPU_B, "current_link_width", b"4\n")
    set_aer_total(host, GPU_B, "nonfatal", 1)
    assert (await state())[GPU_B] == (
        True,
        "warning",
        [
            f"{GPU_B} PCIe link trained at x4 of x16 (riser or slot)",
            f"{GPU_B} reported 1 non-fatal PCIe error(s) (AER) since start",
        ],
    )
    set_health_file(host, GPU_B, "current_link_width", b"16\n")
    set_health_file(host, GPU_B, "reset_method", b"")
    assert (await state())[GPU_B][1:] == (
        "warning",
        [
            f"{GPU_B} reported 1 non-fatal PCIe error(s) (AER) since start",
            f"{GPU_B} has every reset method disabled (reset_method is empty)",
        ],
    )
    # Missing files are unknown, not problems.
    for name in ("aer_dev_fatal", "aer_dev_nonfatal", "reset_method", "current_link_width"):
        set_health_file(host, GPU_B, name, None)
    assert (await state())[GPU_B] == (True, "ok", [])
    assert len(host.calls()) == calls  # no program ran for any of it


async def test_config_all_ones_and_a_vanished_gpu_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = make(tmp_path, monkeypatch, DUAL_VFIO)
    p = probe(host)
    await p.report()
    fall_off_bus(host, GPU_A)
    vanish(host, GPU_B)
    gpus = by_address(await p.gpus())
    assert (gpus[GPU_A].assignable, gpus[GPU_A].health) == (False, "failed")
    assert gpus[GPU_A].problems == [f"{GPU_A} config space reads all ones (fallen off the bus)"]
    assert (gpus[GPU_B].assignable, gpus[GPU_B].health) == (False, "failed")
    assert f"{GPU_B} is gone from sysfs (removed from the bus)" in gpus[GPU_B].problems
