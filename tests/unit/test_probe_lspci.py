"""``lspci -Dvmmnnk`` parsing on real output, converted real output and hostile output."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from vectorlay.adapters.commands import CommandResult
from vectorlay.adapters.probe.lspci import LspciFailed, functions_from_result, parse_vmm
from vectorlay.adapters.probe.pci import PciFunction, gpu_line, is_gpu, to_gpu
from vectorlay.errors import ProbeError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "lspci"


def read(name: str) -> str:
    return (FIXTURES / name).read_text()


def gpus(name: str) -> list[PciFunction]:
    return [f for f in parse_vmm(read(name)) if is_gpu(f)]


# --- every fixture: counts, vendors, drivers, traps ----------------------------------


def test_hgx_h100_eight_gpus_and_no_nvswitch() -> None:
    functions = parse_vmm(read("hgx_h100_8gpu_4nvswitch_lspci_Dvmmnnk_CONVERTED.txt"))
    assert len(functions) == 12
    found = [f for f in functions if is_gpu(f)]
    assert [f.address for f in found] == [
        f"0000:{bus}:00.0" for bus in ("1b", "43", "52", "61", "9d", "c3", "d1", "df")
    ]
    nvswitches = [f for f in functions if f.device_id == "22a3"]
    assert len(nvswitches) == 4
    assert not any(is_gpu(f) for f in nvswitches)  # Bridge [0680]: not a GPU
    assert {(f.vendor_id, f.device_id, f.class_id) for f in found} == {("10de", "2330", "0302")}


def test_unnamed_device_keeps_lspci_wording() -> None:
    h100 = gpus("hgx_h100_8gpu_4nvswitch_lspci_Dvmmnnk_CONVERTED.txt")[0]
    assert h100.device_name == "Device"
    gpu = to_gpu(h100)
    assert gpu.model == "Device 2330"
    assert gpu.driver is None  # the source had no -k: no driver bound, and marked so
    assert gpu_line(h100) == (
        "0000:1b:00.0 3D controller [0302]: NVIDIA Corporation Device [10de:2330] (no driver bound)"
    )


def without_pci_ids(text: str) -> str:
    """``text`` as lspci prints it when it finds no pci.ids: placeholders for every name.

    pciutils lib/names.c falls back to "Class", "Vendor" and "Device" (and
    "Unknown vendor" for SVendor) before the bracketed id.
    """
    placeholders = {"Class": "Class", "Vendor": "Vendor", "Device": "Device"}
    placeholders |= {"SVendor": "Unknown vendor", "SDevice": "Device"}
    lines = []
    for line in text.splitlines(keepends=True):
        key, _, value = line.partition(":\t")
        if key in placeholders:
            line = f"{key}:\t{placeholders[key]} {value.rstrip().rpartition(' ')[2]}\n"
        lines.append(line)
    return "".join(lines)


def test_without_pci_ids_gpus_get_the_class_and_vendor_names_sysfs_would_give() -> None:
    text = without_pci_ids(read("dual_rtx3090_nvidia_lspci_Dvmmnnk_CONVERTED.txt"))
    assert "Class:\tClass [0300]\nVendor:\tVendor [10de]\nDevice:\tDevice [2204]\n" in text
    found = [f for f in parse_vmm(text) if is_gpu(f)]
    assert [gpu_line(f) for f in found] == [
        "0000:05:00.0 VGA compatible controller [0300]: NVIDIA Corporation Device [10de:2204]",
        "0000:0a:00.0 VGA compatible controller [0300]: NVIDIA Corporation Device [10de:2204]",
    ]
    assert to_gpu(found[0]).model == "Device 2204"
    audio = next(f for f in parse_vmm(text) if f.class_id == "0403")
    assert (audio.class_name, audio.vendor_name) == ("Class", "NVIDIA Corporation")


def test_rtx6000ada_eight_gpus_on_vfio_and_audio_left_out() -> None:
    functions = parse_vmm(read("rtx6000ada_x8_vfio_lspci_Dvmmnnk_CONVERTED.txt"))
    assert len(functions) == 16
    found = [f for f in functions if is_gpu(f)]
    assert len(found) == 8
    assert all(f.address.endswith(".0") for f in found)
    assert {f.driver for f in found} == {"vfio-pci"}
    audio = [f for f in functions if f.class_id == "0403"]
    assert len(audio) == 8
    assert not any(is_gpu(f) for f in audio)
    assert to_gpu(found[0]).model == "AD102GL [RTX 6000 Ada Generation]"
    assert gpu_line(found[0]) == (
        "0000:5a:00.0 VGA compatible controller [0300]: NVIDIA Corporation "
        "AD102GL [RTX 6000 Ada Generation] [10de:26b1]"
    )


def test_aspeed_bmc_and_3dnand_nvme_are_not_gpus() -> None:
    functions = parse_vmm(read("pve_8x_rtx3080_aspeed_3dnand_lspci_Dvmmnnk_CONVERTED.txt"))
    assert len(functions) == 11
    found = [f for f in functions if is_gpu(f)]
    assert len(found) == 8
    assert {f.device_id for f in found} == {"2206"}
    aspeed = next(f for f in functions if f.vendor_id == "1a03")
    assert aspeed.class_id == "0300"
    assert not is_gpu(aspeed)
    nvme = [f for f in functions if f.class_id == "0108"]
    assert len(nvme) == 2
    assert not any(is_gpu(f) for f in nvme)
    # A name ending in its own brackets: only the last [xxxx] is the id.
    assert nvme[0].device_name == "NVMe DC SSD [3DNAND, Sentinel Rock Controller]"
    assert nvme[0].device_id == "0b60"


def test_amd_mi210_display_controller() -> None:
    found = gpus("mi210_2gpu_lspci_Dvmmnnk_CONVERTED.txt")
    assert len(found) == 2
    gpu = to_gpu(found[0])
    assert (gpu.vendor, gpu.vendor_id, gpu.device_id) == ("amd", "1002", "740f")
    assert gpu.model == "Aldebaran/MI200 [Instinct MI210]"
    assert found[0].vendor_name == "Advanced Micro Devices, Inc. [AMD/ATI]"
    assert gpu_line(found[0]).startswith(
        "0000:03:00.0 Display controller [0380]: Advanced Micro Devices, Inc. [AMD/ATI] "
        "Aldebaran/MI200 [Instinct MI210] [1002:740f]"
    )


def test_dual_rtx3090_on_nvidia_driver_audio_on_snd_hda() -> None:
    functions = parse_vmm(read("dual_rtx3090_nvidia_lspci_Dvmmnnk_CONVERTED.txt"))
    found = [f for f in functions if is_gpu(f)]
    assert [(f.address, f.driver) for f in found] == [
        ("0000:05:00.0", "nvidia"),
        ("0000:0a:00.0", "nvidia"),
    ]
    assert {f.driver for f in functions if not is_gpu(f)} == {"snd_hda_intel"}


def test_qemu_std_vga_is_not_a_gpu_but_the_passed_through_card_is() -> None:
    functions = parse_vmm(read("pve_vm_guest_qemu_stdvga_rtx3080_lspci_Dvmmnnk_CONVERTED.txt"))
    qemu = next(f for f in functions if f.vendor_id == "1234")
    assert (qemu.class_id, qemu.device_id) == ("0300", "1111")
    assert not is_gpu(qemu)
    assert [f.address for f in functions if is_gpu(f)] == ["0000:01:00.0"]


def test_real_vmmnnk_record_with_libkmod_warning_inside() -> None:
    # Captured with stderr merged: lspci's warning sits inside the record.
    functions = parse_vmm(
        read("ocp_sriov_mellanox_vf_lspci_v_nn_mm_k_s_libkmod_warning_inline.txt")
    )
    assert len(functions) == 1
    nic = functions[0]
    assert nic.address == "0000:5e:00.6"  # no -D: domain 0000 added
    assert (nic.class_id, nic.vendor_id, nic.device_id) == ("0200", "15b3", "1018")
    assert nic.driver == "mlx5_core"
    assert nic.iommu_group == "160"
    assert not is_gpu(nic)


def test_vmm_without_numeric_ids_gives_no_usable_record() -> None:
    # Real `lspci -vmm` (no -nn): names only.  Nothing is guessed from names,
    # so the probe falls back to sysfs rather than trusting this.
    assert parse_vmm(read("dell_laptop_uhd630_gtx1050ti_lspci_vmm.txt")) == []
    result = CommandResult(0, read("dell_laptop_uhd630_gtx1050ti_lspci_vmm.txt").encode())
    with pytest.raises(LspciFailed, match="no usable -vmmnnk record"):
        functions_from_result(result)


# --- converted fixtures agree with the real output they came from --------------------

_NN_LINE = re.compile(
    r"^(?P<slot>[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]) (?P<cls>.+?) \[(?P<cid>[0-9a-f]{4})\]: "
    r".*\[(?P<vid>[0-9a-f]{4}):(?P<did>[0-9a-f]{4})\]"
)


def nn_ids(name: str) -> set[tuple[str, str, str, str]]:
    ids = set()
    for line in read(name).splitlines():
        match = _NN_LINE.match(line)
        if match:
            ids.add(
                (
                    "0000:" + match["slot"],
                    match["cid"],
                    match["vid"],
                    match["did"],
                )
            )
    return ids


def vmm_ids(name: str) -> set[tuple[str, str, str, str]]:
    return {(f.address, f.class_id, f.vendor_id, f.device_id) for f in parse_vmm(read(name))}


@pytest.mark.parametrize(
    ("converted", "source"),
    [
        (
            "rtx6000ada_x8_vfio_lspci_Dvmmnnk_CONVERTED.txt",
            "rtx6000ada_x8_lspci_nn_grep_nvidia_with_audio.txt",
        ),
        (
            "pve_8x_rtx3080_aspeed_3dnand_lspci_Dvmmnnk_CONVERTED.txt",
            "pve_8x_rtx3080_aspeed_lspci_nn_grep_vga_3d_display.txt",
        ),
        (
            "dual_rtx3090_nvidia_lspci_Dvmmnnk_CONVERTED.txt",
            "dual_rtx3090_lspci_nnk_grep_A3_nvidia.txt",
        ),
        (
            "pve_vm_guest_qemu_stdvga_rtx3080_lspci_Dvmmnnk_CONVERTED.txt",
            "pve_vm_guest_qemu_stdvga_rtx3080_lspci_nn_grep_vga_3d_display_and_audio.txt",
        ),
    ],
)
def test_converted_fixture_matches_its_source(converted: str, source: str) -> None:
    expected = nn_ids(source)
    assert expected
    assert vmm_ids(converted) == expected


def test_converted_hgx_matches_its_source() -> None:
    source = read("hgx_h100_8gpu_4nvswitch_lspci_grep_nvidia.txt").splitlines()
    expected = {
        ("0000:" + line[:7], "0302" if "3D controller" in line else "0680", line.split()[-3])
        for line in source
    }
    parsed = parse_vmm(read("hgx_h100_8gpu_4nvswitch_lspci_Dvmmnnk_CONVERTED.txt"))
    assert {(f.address, f.class_id, f.device_id) for f in parsed} == expected


def test_converted_mi210_matches_its_source() -> None:
    source = read("mi210_2gpu_lspci_nnm_display_controller.txt").splitlines()
    expected = {("0000:" + line[:7], "0380", "1002", "740f") for line in source}
    assert vmm_ids("mi210_2gpu_lspci_Dvmmnnk_CONVERTED.txt") == expected


# --- hostile output ------------------------------------------------------------------

H100_RECORD = (
    "Slot:\t0000:17:00.0\n"
    "Class:\t3D controller [0302]\n"
    "Vendor:\tNVIDIA Corporation [10de]\n"
    "Device:\tGH100 [H100 SXM5 80GB] [2330]\n"
    "SVendor:\tNVIDIA Corporation [10de]\n"
    "SDevice:\tDevice [16c1]\n"
    "Rev:\ta1\n"
    "Driver:\tvfio-pci\n"
    "Module:\tnvidiafb\n"
    "Module:\tnouveau\n"
    "IOMMUGroup:\t25\n"
)


def test_protocol_example_record() -> None:
    [function] = parse_vmm(H100_RECORD)
    assert gpu_line(function) == (
        "0000:17:00.0 3D controller [0302]: NVIDIA Corporation GH100 [H100 SXM5 80GB] [10de:2330]"
    )
    gpu = to_gpu(function)
    assert (gpu.model, gpu.driver, gpu.iommu_group) == ("GH100 [H100 SXM5 80GB]", "vfio-pci", "25")


@pytest.mark.parametrize("text", ["", "\n\n\n", "   \n\t\n"])
def test_empty_output(text: str) -> None:
    assert parse_vmm(text) == []
    with pytest.raises(LspciFailed):
        functions_from_result(CommandResult(0, text.encode()))


@pytest.mark.parametrize("cut", [20, 60, 80, 95])
def test_truncated_record_is_skipped_not_guessed(cut: int) -> None:
    good = H100_RECORD.replace("17:00.0", "18:00.0")
    text = good + "\n" + H100_RECORD[:cut]
    parsed = parse_vmm(text)
    assert [f.address for f in parsed] == ["0000:18:00.0"]


def test_truncated_mid_id_is_skipped() -> None:
    text = H100_RECORD.split("Device:")[0] + "Device:\tGH100 [H100 SXM5 80GB] [23"
    assert parse_vmm(text) == []


def test_records_without_blank_separator_are_split_at_slot() -> None:
    second = H100_RECORD.replace("17:00.0", "18:00.0")
    parsed = parse_vmm(H100_RECORD + second)
    assert [f.address for f in parsed] == ["0000:17:00.0", "0000:18:00.0"]


def test_crlf_line_ends() -> None:
    [function] = parse_vmm(H100_RECORD.replace("\n", "\r\n"))
    assert function.driver == "vfio-pci"


def test_binary_junk() -> None:
    junk = bytes(range(256)) * 64 + b"\x00Slot:\t\xff\xfe\nClass:\t\x1b[31m [0302]\n"
    text = junk.decode("utf-8", "replace")
    assert parse_vmm(text) == []
    with pytest.raises(LspciFailed):
        functions_from_result(CommandResult(0, junk))


def test_control_characters_in_names_are_neutralised() -> None:
    text = H100_RECORD.replace("GH100 [H100", "GH100\x1b[2J\x07 [H100")
    [function] = parse_vmm(text)
    assert "\x1b" not in function.device_name
    assert "\x07" not in function.device_name
    assert function.device_name.startswith("GH100?[2J?")


def test_absurd_iommu_group_and_slot_are_refused() -> None:
    text = H100_RECORD.replace("IOMMUGroup:\t25", "IOMMUGroup:\t../../etc")
    [function] = parse_vmm(text)
    assert function.iommu_group is None
    assert parse_vmm(H100_RECORD.replace("0000:17:00.0", "0000:17:00.9")) == []


def test_ten_megabytes_of_output() -> None:
    record = H100_RECORD + "\n"
    copies = (10 << 20) // len(record) + 1
    text = record * copies
    started = time.perf_counter()
    parsed = parse_vmm(text)
    elapsed = time.perf_counter() - started
    assert len(parsed) == copies
    # Not a timing assertion on the parser's speed, only a guard against
    # quadratic behaviour (which would take minutes here).
    assert elapsed < 60


def test_ten_megabytes_on_one_line() -> None:
    line = "Device:\t" + " " * (10 << 20) + "x"
    assert parse_vmm("Slot:\t0000:17:00.0\n" + line) == []
    assert parse_vmm("A" * (10 << 20)) == []


# --- a finished lspci run ------------------------------------------------------------


def test_result_with_libkmod_warning_on_stderr_is_fine() -> None:
    result = CommandResult(
        0, H100_RECORD.encode(), b"lspci: Unable to load libkmod resources: error -2\n"
    )
    assert len(functions_from_result(result)) == 1


@pytest.mark.parametrize(
    ("result", "message"),
    [
        (CommandResult(None, error="Permission denied"), "could not run: Permission denied"),
        (CommandResult(None, timed_out=True), "did not answer in time"),
        (CommandResult(None, H100_RECORD.encode(), truncated=True), "printed more than"),
        (
            CommandResult(1, b"", b"pcilib: Cannot open /proc/bus/pci\nmore\n"),
            "exited with status 1: pcilib: Cannot open /proc/bus/pci",
        ),
    ],
)
def test_failed_runs(result: CommandResult, message: str) -> None:
    with pytest.raises(LspciFailed, match=re.escape(message)) as info:
        functions_from_result(result)
    assert isinstance(info.value, ProbeError)
    assert "\n" not in str(info.value)
