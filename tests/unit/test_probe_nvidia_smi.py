"""GPU utilization from nvidia-smi: bus-id matching, missing values, wrong shapes."""

from __future__ import annotations

from pathlib import Path

import pytest

from vectorlay.adapters.probe.nvidia_smi import (
    QUERY_ARGS,
    mean_utilization,
    parse_utilization,
    query_utilization,
)

SMI = Path(__file__).resolve().parent.parent / "fixtures" / "nvidia-smi"
AWS_P5 = [
    "0000:53:00.0",
    "0000:64:00.0",
    "0000:75:00.0",
    "0000:86:00.0",
    "0000:97:00.0",
    "0000:a8:00.0",
    "0000:b9:00.0",
    "0000:ca:00.0",
]


def test_real_h100_query_output() -> None:
    text = SMI / "aws_p5_48xlarge_8x_h100_query_busid_util_noheader_nounits_CONVERTED.csv"
    values = parse_utilization(text.read_text())
    assert values == dict.fromkeys(AWS_P5, 0)
    # 0 here is a real reading, so it counts.
    assert mean_utilization(values, AWS_P5) == 0


@pytest.mark.parametrize(
    "fixture",
    [
        "aws_p5_48xlarge_8x_h100_nvidia_smi_570.txt",  # the plain table
        "rtx2080_query_20fields_noheader_nounits.csv",  # another query
        "rtx5060ti_query_name_mem_util_driver_computecap_pstate.csv",
        "t1000_2x_rtxpro6000_query_index_name_busid.csv",
    ],
)
def test_output_of_other_queries_gives_nothing(fixture: str) -> None:
    assert parse_utilization((SMI / fixture).read_text()) == {}


def test_unreadable_values_are_left_out_never_zero() -> None:
    text = (
        "00000000:53:00.0, 40\n"
        "00000000:64:00.0, [N/A]\n"
        "00000000:75:00.0, [Not Supported]\n"
        "00000000:86:00.0, 61 %\n"
        "00000000:97:00.0, 250\n"
        "00000000:A8:00.0, -5\n"
        "garbage line\n"
        "\x00\xff, 12\n"
    )
    values = parse_utilization(text)
    assert values == {"0000:53:00.0": 40, "0000:86:00.0": 61}
    assert mean_utilization(values, AWS_P5) == 51  # 50.5 rounds half up


def test_mean_over_the_asked_gpus_only() -> None:
    values = {"0000:53:00.0": 10, "0000:64:00.0": 90}
    assert mean_utilization(values, ["0000:53:00.0"]) == 10
    assert mean_utilization(values, ["0000:99:00.0"]) is None
    assert mean_utilization({}, AWS_P5) is None
    assert mean_utilization({"a": 1, "b": 2}, ["a", "b"]) == 2  # 1.5 -> 2


async def test_query_runs_the_exact_command(tmp_path: Path) -> None:
    fake = tmp_path / "nvidia-smi"
    expected = " ".join(QUERY_ARGS)
    fake.write_text(f'#!/bin/sh\n[ "$*" = "{expected}" ] || exit 9\necho "00000000:53:00.0, 77"\n')
    fake.chmod(0o755)
    assert await query_utilization(str(fake), timeout=5) == {"0000:53:00.0": 77}


async def test_query_failure_is_empty(tmp_path: Path) -> None:
    fake = tmp_path / "nvidia-smi"
    fake.write_text(
        "#!/bin/sh\necho 'NVIDIA-SMI has failed because it couldn'\"'\"'t communicate "
        "with the NVIDIA driver.'\nexit 9\n"
    )
    fake.chmod(0o755)
    assert await query_utilization(str(fake), timeout=5) == {}
    hung = tmp_path / "hung"
    hung.write_text("#!/bin/sh\nexec sleep 600\n")
    hung.chmod(0o755)
    assert await query_utilization(str(hung), timeout=0.2) == {}


async def test_rows_read_before_a_gpu_error_still_count(tmp_path: Path) -> None:
    # One GPU fell off the bus: nvidia-smi still prints the others, then exits 15.
    fake = tmp_path / "nvidia-smi"
    fake.write_text(
        "#!/bin/sh\n"
        "echo '00000000:17:00.0, 40'\n"
        "echo 'Unable to determine the device handle for GPU0000:31:00.0: Unknown Error'\n"
        "echo '00000001:A1:00.0, 20'\n"
        "exit 15\n"
    )
    fake.chmod(0o755)
    values = await query_utilization(str(fake), timeout=5)
    assert values == {"0000:17:00.0": 40, "0001:a1:00.0": 20}
    assert mean_utilization(values, ["0000:17:00.0", "0000:31:00.0", "0001:a1:00.0"]) == 30


async def test_rows_of_a_run_cut_short_never_count(tmp_path: Path) -> None:
    hung = tmp_path / "hung"
    hung.write_text("#!/bin/sh\necho '00000000:17:00.0, 40'\nexec sleep 600\n")
    hung.chmod(0o755)
    assert await query_utilization(str(hung), timeout=0.3) == {}
    flood = tmp_path / "flood"
    flood.write_text("#!/bin/sh\nwhile :; do echo '00000000:17:00.0, 40'; done\n")
    flood.chmod(0o755)
    assert await query_utilization(str(flood), timeout=5) == {}
