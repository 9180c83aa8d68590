"""Parsing `nerdctl images`, `ps -a` and `rmi` output on real captures (tests/fixtures/nerdctl)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vectorlay.adapters.runtime import podman
from vectorlay.adapters.runtime.argv import images_argv, ps_all_argv, rmi_argv
from vectorlay.adapters.runtime.nerdctl import (
    is_in_use,
    parse_images,
    parse_images_in_use,
    parse_size,
)
from vectorlay.adapters.runtime.stderr import failure
from vectorlay.domain.agent.imagegc import Image
from vectorlay.errors import ContainerRuntimeError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "nerdctl"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_images_line_of_nerdctl_2() -> None:
    [image] = parse_images(fixture("finch_nerdctl_images_format_json_nginx_arm64.jsonl"))
    assert image == Image("docker.io/library/nginx:latest", "09369da6b103", 211_900_000)


def test_one_entry_per_reference_with_the_largest_platform() -> None:
    line = fixture("finch_nerdctl_images_format_json_nginx_arm64.jsonl").strip()
    other = line.replace('"211.9MB"', '"4.214kB"').replace("linux/arm64", "linux/amd64")
    untagged = (
        line.replace('"Name":"docker.io/library/nginx:latest"', '"Name":""')
        .replace('"Repository":"nginx"', '"Repository":"<none>"')
        .replace('"ID":"09369da6b103"', '"ID":"0123456789ab"')
    )
    found = parse_images("\n".join([other, line, "", untagged]) + "\n")
    assert found == [
        Image("docker.io/library/nginx:latest", "09369da6b103", 211_900_000),
        Image("0123456789ab", "0123456789ab", 211_900_000),  # removed by id
    ]


@pytest.mark.parametrize(
    ("fixture_name", "sizes"),
    [
        # nerdctl 1.x: containerd's binary units, with a space
        ("nerdctl_images_a_table_v1_sizes_mib.txt", [7 * 1024**2, round(80.8 * 1024**2)]),
        # nerdctl 2.x: go-units, decimal, no space
        ("nerdctl_images_a_table_v2.3.4_sizes_go_units.txt", [16_380]),
    ],
)
def test_sizes_of_both_unit_families(fixture_name: str, sizes: list[int]) -> None:
    rows = fixture(fixture_name).splitlines()[1:]
    # SIZE is the column after PLATFORM; split on runs of 2+ spaces as the table pads.
    found = [parse_size(re.split(r"\s{2,}", row.strip())[5]) for row in rows]
    assert found == sizes


@pytest.mark.parametrize("text", ["", "lots", "12 parsecs", "-1B", "1..2MB"])
def test_sizes_that_are_not(text: str) -> None:
    assert parse_size(text) is None


def test_images_in_use_come_from_every_container() -> None:
    used = parse_images_in_use(fixture("finch_nerdctl_ps_format_json_compose_nginx.jsonl"))
    assert "docker.io/library/nginx:latest" in used


def test_an_unreadable_line_is_an_error() -> None:
    with pytest.raises(ContainerRuntimeError, match="unreadable line 2"):
        parse_images('{"ID": "x", "Name": "a:1"}\n{oops\n')


@pytest.mark.parametrize(
    "name",
    [
        "nerdctl_rmi_f_running_container_conflict_fata_pre_v2.0.txt",
        "nerdctl_rmi_stopped_container_conflict_fata_RECONSTRUCTED.txt",
        "nerdctl_rmi_conflict_must_force_old_wording_logfmt_REDACTED.txt",
    ],
)
def test_rmi_conflicts_read_as_in_use(name: str) -> None:
    error = failure(1, fixture(name))
    assert str(error).startswith("conflict: unable to")
    assert "errors:" not in str(error)  # the `1 errors:` header is dropped
    assert is_in_use(str(error))


def test_command_lines() -> None:
    assert images_argv("nerdctl") == ["nerdctl", "images", "--format", "{{json .}}"]
    assert ps_all_argv("nerdctl") == ["nerdctl", "ps", "-a", "--no-trunc", "--format", "{{json .}}"]
    assert rmi_argv("nerdctl", "docker.io/library/a:1") == [
        "nerdctl",
        "rmi",
        "docker.io/library/a:1",
    ]
    for bad in ("", "-f", "a b"):
        with pytest.raises(ContainerRuntimeError):
            rmi_argv("nerdctl", bad)


# --- the same parsers on Docker's captures (tests/fixtures/docker) ---------------------------

DOCKER = FIXTURES.parent / "docker"


def test_docker_images_and_ps_read_the_same_way() -> None:
    found = parse_images((DOCKER / "docker_images_format_json_template.jsonl").read_text())
    refs = {i.ref: i.size_bytes for i in found}
    assert refs["localhost/bb:1"] == 2_000_000
    assert refs["localhost/bb:2"] == 2_000_000
    assert "localhost/model-a:v1" in refs
    used = parse_images_in_use((DOCKER / "docker_ps_a_format_json_template.jsonl").read_text())
    assert "localhost/bb:1" in used


def test_docker_rmi_in_use_reads_as_in_use() -> None:
    text = (DOCKER / "docker_rmi_image_in_use_by_container_exit1.txt").read_text()
    assert is_in_use(text)


# --- Podman: one JSON array (tests/fixtures/podman) --------------------------------------------

PODMAN = FIXTURES.parent / "podman"


def test_podman_images_one_entry_per_name() -> None:
    found = podman.parse_images((PODMAN / "podman_images_format_json.json").read_text())
    by_ref = {i.ref: (i.image_id[:12], i.size_bytes) for i in found}
    assert by_ref == {
        "localhost/bb:2": ("d3214535ad5d", 1997907),
        "localhost/model-a:v1": ("eaf40fdd0567", 1997907),
        "localhost/model-a:v2": ("eaf40fdd0567", 1997907),
        "localhost/bb:1": ("07aa6357bf88", 1997965),
    }
    assert podman.parse_images("[]\n") == []


def test_podman_images_in_use_by_name_and_id() -> None:
    used = podman.parse_images_in_use((PODMAN / "podman_ps_a_format_json.json").read_text())
    assert "localhost/bb:1" in used
    assert any(len(u) == 64 for u in used)  # ImageID too: an untagged image is matched by id
    assert podman.parse_images_in_use("[]") == set()
    with pytest.raises(ContainerRuntimeError, match="unreadable JSON"):
        podman.parse_images("{")


def test_podman_rmi_in_use_reads_as_in_use() -> None:
    text = (PODMAN / "podman_rmi_image_in_use_by_container_exit2.txt").read_text()
    assert is_in_use(text)
