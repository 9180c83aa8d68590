"""The GPU rule, PCI address spellings and the gpu_info line."""

from __future__ import annotations

from pathlib import Path

import pytest

from vectorlay.adapters.probe.pci import (
    PciFunction,
    clean_text,
    gpu_line,
    is_gpu,
    normalize_address,
    to_gpu,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def function(class_id: str, vendor_id: str, device_id: str = "0001") -> PciFunction:
    return PciFunction("0000:01:00.0", class_id, "x", vendor_id, "v", device_id, "d")


@pytest.mark.parametrize(
    ("class_id", "vendor_id", "expected"),
    [
        ("0300", "10de", True),  # VGA, NVIDIA
        ("0302", "10de", True),  # 3D controller (H100)
        ("0380", "1002", True),  # Display controller (MI210)
        ("1200", "1002", True),  # Processing accelerators (MI300X)
        ("1200", "10de", True),
        ("0403", "10de", False),  # HDMI audio function of a GPU
        ("0680", "10de", False),  # NVSwitch is a bridge
        ("0604", "10de", False),
        ("0300", "1a03", False),  # ASPEED BMC graphics
        ("0300", "102b", False),  # Matrox BMC graphics
        ("0300", "1234", False),  # QEMU std VGA
        ("0300", "8086", False),  # Intel iGPU: not sold as a cloud GPU here
        ("0108", "8086", False),  # NVMe "3DNAND"
        ("0300", "1022", False),  # AMD's CPU/chipset vendor id is not the GPU one
    ],
)
def test_gpu_rule(class_id: str, vendor_id: str, expected: bool) -> None:
    assert is_gpu(function(class_id, vendor_id)) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0000:17:00.0", "0000:17:00.0"),
        ("17:00.0", "0000:17:00.0"),
        ("00000000:53:00.0", "0000:53:00.0"),  # nvidia-smi
        ("00000000:CA:00.0", "0000:ca:00.0"),
        ("0002:01:00.1", "0002:01:00.1"),
        ("10000:e1:00.0", "10000:e1:00.0"),  # Intel VMD domain
        ("00010000:E1:00.0", "10000:e1:00.0"),
        (" 0000:17:00.0\n", "0000:17:00.0"),
        ("0000:17:00.8", None),
        ("0000:17:00", None),
        ("0000:1:00.0", None),
        ("../../etc", None),
        ("", None),
        ("GPU-22b2c6ac", None),
    ],
)
def test_normalize_address(text: str, expected: str | None) -> None:
    assert normalize_address(text) == expected


def test_nvidia_smi_and_lspci_bus_ids_from_real_fixtures_meet() -> None:
    # t1000 fixture: nvidia-smi's own spelling of bus ids (upper-case 5E).
    rows = (FIXTURES / "nvidia-smi" / "t1000_2x_rtxpro6000_query_index_name_busid.csv").read_text()
    ids = [line.rsplit(",", 1)[1].strip() for line in rows.splitlines()[1:]]
    assert [normalize_address(i) for i in ids] == ["0000:47:00.0", "0000:5e:00.0", "0000:75:00.0"]


def test_to_gpu_and_line() -> None:
    h100 = PciFunction(
        "0000:17:00.0",
        "0302",
        "3D controller",
        "10de",
        "NVIDIA Corporation",
        "2330",
        "GH100 [H100 SXM5 80GB]",
        "vfio-pci",
        "25",
    )
    gpu = to_gpu(h100)
    assert (gpu.pci_address, gpu.vendor, gpu.vendor_id, gpu.device_id) == (
        "0000:17:00.0",
        "nvidia",
        "10de",
        "2330",
    )
    assert gpu_line(h100) == (
        "0000:17:00.0 3D controller [0302]: NVIDIA Corporation GH100 [H100 SXM5 80GB] [10de:2330]"
    )


def test_clean_text() -> None:
    assert clean_text("plain") == "plain"
    assert clean_text("a\x1b[31mb\x00c") == "a?[31mb?c"
    long = clean_text("x" * 500, 50)
    assert len(long) == 50
    assert long.endswith("…")
