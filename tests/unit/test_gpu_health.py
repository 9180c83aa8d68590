"""GPU health: sysfs readers on real formats, each rule, quarantine, the verdicts together."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes.host.fakehost import FIXTURES
from vectorlay.adapters.probe.health import (
    TOTAL_FATAL,
    TOTAL_NONFATAL,
    aer_total,
    parse_width,
    read_signals,
)
from vectorlay.domain.agent.gpustate import assess, changed, with_quarantine
from vectorlay.domain.agent.health import (
    OK,
    GpuHealth,
    Health,
    HealthSignals,
    HealthTracker,
    judge,
)
from vectorlay.domain.agent.passthrough import GroupMember, IommuGroup
from vectorlay.domain.agent.quarantine import Quarantine
from vectorlay.domain.messages import Gpu

SYSFS = FIXTURES / "sysfs"
ADDR = "0000:17:00.0"


# --- readers on real formats ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "name"),
    [
        ("aer_dev_fatal.linux-4.19-to-5.4_RECONSTRUCTED", TOTAL_FATAL),
        ("aer_dev_fatal.linux-5.5-to-6.17_RECONSTRUCTED", TOTAL_FATAL),
        ("aer_dev_fatal.linux-6.18_RECONSTRUCTED", TOTAL_FATAL),
        ("aer_dev_fatal.abi-doc-sample_long-names", TOTAL_FATAL),
        ("aer_dev_nonfatal.linux-4.19-to-5.4_RECONSTRUCTED", TOTAL_NONFATAL),
        ("aer_dev_nonfatal.linux-5.5-to-6.17_RECONSTRUCTED", TOTAL_NONFATAL),
        ("aer_dev_nonfatal.linux-6.18_RECONSTRUCTED", TOTAL_NONFATAL),
        ("aer_dev_nonfatal.abi-doc-sample_long-names", TOTAL_NONFATAL),
    ],
)
def test_aer_total_is_found_by_name_in_every_kernel_format(fixture: str, name: str) -> None:
    raw = (SYSFS / "aer" / fixture).read_bytes()
    assert aer_total(raw, name) == 0
    # A count in the TOTAL line is read, whatever the other lines say.
    grown = raw.replace(f"{name} 0".encode(), f"{name} 7".encode())
    assert aer_total(grown, name) == 7
    # The other file's total is not this one.
    other = TOTAL_NONFATAL if name == TOTAL_FATAL else TOTAL_FATAL
    assert aer_total(raw, other) is None


def test_aer_names_with_spaces_and_bit_lines_are_split_at_the_last_space() -> None:
    raw = b"Data Link Protocol 3\ndev_fatal_errs_bit[9] 1\nTOTAL_ERR_FATAL 4\n"
    assert aer_total(raw, TOTAL_FATAL) == 4
    assert aer_total(b"TOTAL_ERR_FATAL x\n", TOTAL_FATAL) is None


@pytest.mark.parametrize(
    ("fixture", "width"),
    [
        ("current_link_width.real_16", 16),
        ("current_link_width.real_4", 4),
        ("max_link_width.real_16", 16),
        ("current_link_width.lnksta_all_ones_63_RECONSTRUCTED", 63),
    ],
)
def test_link_widths(fixture: str, width: int) -> None:
    assert parse_width((SYSFS / "link" / fixture).read_bytes()) == width


def _device(tmp_path: Path, files: dict[str, bytes]) -> str:
    base = tmp_path / "bus" / "pci" / "devices" / ADDR
    base.mkdir(parents=True)
    for name, content in files.items():
        (base / name).write_bytes(content)
    return str(tmp_path)


def test_read_signals_from_real_files(tmp_path: Path) -> None:
    root = _device(
        tmp_path,
        {
            "config": (SYSFS / "config" / "nvidia_gk104_gtx760_first80_CONVERTED.bin").read_bytes(),
            "aer_dev_fatal": (
                SYSFS / "aer" / "aer_dev_fatal.linux-6.18_RECONSTRUCTED"
            ).read_bytes(),
            "current_link_width": (SYSFS / "link" / "current_link_width.real_4").read_bytes(),
            "max_link_width": (SYSFS / "link" / "max_link_width.real_16").read_bytes(),
            "reset_method": (SYSFS / "reset_method" / "sandisk_nvme_flr_bus.real").read_bytes(),
        },
    )
    assert read_signals(root, ADDR) == HealthSignals(
        present=True,
        vendor_all_ones=False,
        aer_fatal=0,
        aer_nonfatal=None,  # no file: unknown
        link_width=4,
        max_link_width=16,
        reset_method="flr bus",
    )
    assert read_signals(root, "0000:99:00.0") == HealthSignals(present=False)


def test_read_signals_all_ones_and_empty_reset_method(tmp_path: Path) -> None:
    root = _device(
        tmp_path,
        {
            "config": (SYSFS / "config" / "fallen_off_all_ones_64_RECONSTRUCTED.bin").read_bytes(),
            "reset_method": (
                SYSFS / "reset_method" / "all_disabled_empty_RECONSTRUCTED"
            ).read_bytes(),
        },
    )
    signals = read_signals(root, ADDR)
    assert signals.vendor_all_ones is True
    assert signals.reset_method == ""


# --- the rules -------------------------------------------------------------------------------


def test_clean_and_unknown_signals_are_ok() -> None:
    assert judge(ADDR, HealthSignals()) == OK
    assert judge(ADDR, HealthSignals(link_width=16, max_link_width=16, reset_method="flr")) == OK


@pytest.mark.parametrize(
    ("signals", "fatal", "expected", "text"),
    [
        (HealthSignals(present=False), 0, Health.FAILED, "gone from sysfs"),
        (HealthSignals(vendor_all_ones=True, link_width=63, max_link_width=16), 0, Health.FAILED,
         "config space reads all ones"),
        (HealthSignals(aer_fatal=3), 2, Health.FAILED, "2 fatal PCIe error(s)"),
        (HealthSignals(link_width=4, max_link_width=16), 0, Health.WARNING, "x4 of x16"),
        (HealthSignals(reset_method=""), 0, Health.WARNING, "reset_method is empty"),
    ],
)  # fmt: skip
def test_each_rule(signals: HealthSignals, fatal: int, expected: Health, text: str) -> None:
    verdict = judge(ADDR, signals, fatal_since=fatal)
    assert verdict.health is expected
    assert len(verdict.problems) == 1
    assert text in verdict.problems[0]
    assert verdict.problems[0].startswith(ADDR)


def test_counts_are_since_the_first_reading() -> None:
    tracker = HealthTracker()
    old = HealthSignals(aer_fatal=5, aer_nonfatal=9)
    assert tracker.assess(ADDR, old) == OK  # old counts are history
    assert (
        tracker.assess(ADDR, HealthSignals(aer_fatal=5, aer_nonfatal=10)).health is Health.WARNING
    )
    failed = tracker.assess(ADDR, HealthSignals(aer_fatal=6, aer_nonfatal=10))
    assert failed.health is Health.FAILED
    assert failed.problems == (
        f"{ADDR} reported 1 fatal PCIe error(s) (AER) since start",
        f"{ADDR} reported 1 non-fatal PCIe error(s) (AER) since start",
    )
    # A counter that went back (device removed and added again) starts afresh.
    assert tracker.assess(ADDR, HealthSignals(aer_fatal=0, aer_nonfatal=0)) == OK


def test_link_back_to_full_width_recovers() -> None:
    tracker = HealthTracker()
    assert (
        tracker.assess(ADDR, HealthSignals(link_width=4, max_link_width=16)).health
        is Health.WARNING
    )
    assert tracker.assess(ADDR, HealthSignals(link_width=16, max_link_width=16)) == OK


# --- quarantine ------------------------------------------------------------------------------


def test_quarantine_after_three_failures_one_retry_after_ten_minutes() -> None:
    q = Quarantine()
    q.start_failed(["12"], "vfio: group 12 is not viable", now=0)
    q.start_failed(["12"], "vfio: group 12 is not viable", now=1)
    assert q.health("12", now=2) is None
    q.start_failed(["12"], "QMP command failed", now=3)
    verdict = q.health("12", now=4)
    assert verdict == GpuHealth(
        Health.FAILED, ("quarantined after 3 failed starts: QMP command failed",)
    )
    assert q.health("12", now=3 + 599) == verdict
    retry = q.health("12", now=3 + 600)
    assert retry is not None
    assert retry.health is Health.WARNING
    q.start_failed(["12"], "again", now=700)
    failed_again = q.health("12", now=701)
    assert failed_again is not None
    assert failed_again.health is Health.FAILED
    q.started(["12"])
    assert q.health("12", now=702) is None


def test_a_success_resets_the_count() -> None:
    q = Quarantine()
    for now in (0, 1):
        q.start_failed(["12"], "boom", now=now)
    q.started(["12"])
    for now in (2, 3):
        q.start_failed(["12"], "boom", now=now)
    assert q.health("12", now=4) is None


# --- the verdicts together -------------------------------------------------------------------


def gpu(addr: str, group: str, driver: str = "vfio-pci") -> Gpu:
    return Gpu(addr, "nvidia", "10de", "2204", "GA102", driver, group)


def group(number: str, *members: tuple[str, str | None]) -> IommuGroup:
    return IommuGroup(number, tuple(GroupMember(a, d, "0300") for a, d in members))


A, A_AUDIO, B = "0000:05:00.0", "0000:05:00.1", "0000:0a:00.0"


def test_a_failed_gpu_spoils_its_group_mates() -> None:
    groups = {"12": group("12", (A, "vfio-pci"), (B, "vfio-pci"))}
    health = {A: GpuHealth(Health.FAILED, (f"{A} is gone from sysfs (removed from the bus)",))}
    out = assess(
        [gpu(A, "12"), gpu(B, "12")], groups=groups, vfio_present={"12": True}, health=health
    )
    assert [(g.assignable, g.health) for g in out] == [(False, "failed"), (False, "ok")]
    assert out[1].problems == [f"IOMMU group 12 also holds {A}, which has failed"]


def test_problems_name_the_spoiling_device_and_missing_node() -> None:
    groups = {"12": group("12", (A, "vfio-pci"), (A_AUDIO, "snd_hda_intel"))}
    out = assess([gpu(A, "12")], groups=groups, vfio_present={"12": False}, health={})
    assert out[0].assignable is False
    assert out[0].problems == [
        f"IOMMU group 12 is not viable: {A_AUDIO} is bound to snd_hda_intel",
        "/dev/vfio/12 is missing",
    ]


def test_quarantine_overlay_and_change_detection() -> None:
    groups = {"12": group("12", (A, "vfio-pci"))}
    before = assess([gpu(A, "12")], groups=groups, vfio_present={"12": True}, health={})
    assert before[0].assignable is True
    assert before[0].problems == []
    q = Quarantine()
    for now in range(3):
        q.start_failed(["12"], "boom", now=now)
    after = with_quarantine(before, q, now=5)
    assert (after[0].assignable, after[0].health) == (False, "failed")
    assert after[0].problems == ["quarantined after 3 failed starts: boom"]
    assert changed(before, after)
    assert not changed(after, with_quarantine(before, q, now=6))
