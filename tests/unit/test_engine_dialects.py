"""Docker's and Podman's own output, read by their dialects: every captured fixture.

The fixtures (``tests/fixtures/podman/``, ``tests/fixtures/docker/``) were
printed by Podman 4.3.1 and by the Docker CLI 28.2 against Podman's
Docker-compatible service; see ``tests/fixtures/SOURCES.md``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from vectorlay.adapters.probe.host import TOOLS, engine_tools
from vectorlay.adapters.probe.versions import parse_version
from vectorlay.adapters.runtime import EngineRuntime, docker, nerdctl, podman
from vectorlay.adapters.runtime.argv import CONTAINER_ID_RE, events_argv, ps_argv
from vectorlay.adapters.runtime.engines import (
    DEFAULT_OCI_RUNTIMES,
    ENGINES,
    default_oci_runtime,
    load_dialect,
)
from vectorlay.adapters.runtime.nerdctl import ps_status_key
from vectorlay.adapters.runtime.output import parse_inspect, printed_id
from vectorlay.adapters.runtime.stderr import failure
from vectorlay.domain.messages import ReplicaStatus
from vectorlay.errors import (
    ConfigError,
    ContainerRuntimeError,
    ImageNotFound,
    NameInUse,
    RuntimeNotInstalled,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PODMAN = FIXTURES / "podman"
DOCKER = FIXTURES / "docker"
ENGINE_DIRS = {"podman": PODMAN, "docker": DOCKER}


def text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


# --- engines ---------------------------------------------------------------------------


def test_each_engine_has_its_dialect_and_oci_runtime() -> None:
    assert ENGINES == ("nerdctl", "docker", "podman")
    assert [load_dialect(e).name for e in ENGINES] == list(ENGINES)
    assert load_dialect("nerdctl") is nerdctl.DIALECT
    assert DEFAULT_OCI_RUNTIMES == {
        "nerdctl": "io.containerd.kata.v2",
        "docker": "io.containerd.kata.v2",
        "podman": "kata",
    }
    assert default_oci_runtime("podman") == "kata"
    with pytest.raises(ValueError, match="unknown container engine 'lxc'"):
        load_dialect("lxc")


def test_the_ps_and_events_lines_follow_the_engine() -> None:
    assert ps_argv("podman", podman.DIALECT.ps_format)[-4:] == [
        "--format",
        "json",
        "--filter",
        "label=vectorlay.replica-id",
    ]
    assert ps_argv("docker", docker.DIALECT.ps_format)[-3] == "{{json .}}"
    assert events_argv("podman", podman.DIALECT.events_format) == [
        "podman",
        "events",
        "--format",
        "json",
    ]
    assert events_argv("/usr/bin/docker", docker.DIALECT.events_format) == [
        "/usr/bin/docker",
        "events",
        "--format",
        "{{json .}}",
    ]


def test_podman_with_kata_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    EngineRuntime(engine="podman", env_dir=tmp_path / "a")
    assert "podman runs Kata 1.x only" in caplog.text
    caplog.clear()
    EngineRuntime(engine="podman", oci_runtime="runc", env_dir=tmp_path / "b")
    EngineRuntime(engine="docker", env_dir=tmp_path / "c")
    assert caplog.text == ""
    with pytest.raises(ConfigError, match="unknown container engine 'lxc'"):
        EngineRuntime(engine="lxc", env_dir=tmp_path / "d")


def test_dependencies_follow_the_engine() -> None:
    assert engine_tools("nerdctl") == TOOLS
    assert engine_tools("docker") == ("containerd", "docker", "kata-runtime", "virtiofsd")
    # Podman runs its OCI runtime through conmon, without containerd.
    assert engine_tools("podman") == ("podman", "kata-runtime", "virtiofsd")


@pytest.mark.parametrize(
    ("tool", "path", "version"),
    [
        ("docker", DOCKER / "docker_--version.txt", "28.2.2"),
        ("podman", PODMAN / "podman_--version.txt", "4.3.1"),
    ],
)
def test_engine_versions(tool: str, path: Path, version: str) -> None:
    assert parse_version(tool, text(path)) == version
    assert parse_version(tool, "something else 1.0") is None


# --- ps --------------------------------------------------------------------------------

EXPECTED_PS = {
    "replica-r1": "Up",
    "replica-r2": "Exited (0)",
    "replica-r3": "Exited (3)",
    "replica-r4": "Exited (137)",
    "replica-r5": "Exited (137)",
}


@pytest.mark.parametrize(
    "name",
    ["podman_ps_a_format_json.json", "podman_ps_a_no_trunc_format_json_template_filter_label.json"],
)
def test_podman_ps_is_one_array(name: str) -> None:
    entries = podman.parse_ps(text(PODMAN / name))
    assert {e.names: ps_status_key(e.status) for e in entries} == EXPECTED_PS
    # Podman always prints the full id.
    assert all(len(e.container_id) == 64 for e in entries)
    # The same objects one per line (newer Podman's `{{json .}}`) read the same.
    lines = "\n".join(json.dumps(item) for item in json.loads(text(PODMAN / name)))
    assert podman.parse_ps(lines) == entries


def test_podman_ps_without_containers() -> None:
    assert podman.parse_ps(text(PODMAN / "podman_ps_a_format_json_no_containers.json")) == []
    assert podman.parse_ps("") == []
    with pytest.raises(ContainerRuntimeError, match="podman ps printed something unreadable"):
        podman.parse_ps("[{")


@pytest.mark.parametrize(
    ("name", "id_length"),
    [
        ("docker_ps_a_format_json_template.jsonl", 12),
        ("docker_ps_a_no_trunc_format_json_template_filter_label.jsonl", 64),
    ],
)
def test_docker_ps_is_one_object_per_line(name: str, id_length: int) -> None:
    entries = docker.parse_ps(text(DOCKER / name))
    assert {e.names: ps_status_key(e.status) for e in entries} == EXPECTED_PS
    assert {len(e.container_id) for e in entries} == {id_length}


def test_docker_ps_without_containers() -> None:
    assert (
        docker.parse_ps(text(DOCKER / "docker_ps_a_format_json_template_no_containers.jsonl")) == []
    )
    with pytest.raises(ContainerRuntimeError, match="docker ps printed an unreadable line 2"):
        docker.parse_ps('{"ID": "abc"}\nnot json\n')


@pytest.mark.parametrize(
    "path",
    [
        PODMAN / "podman_run_d_labels_env_file_device_stdout_id.txt",
        DOCKER / "docker_run_d_labels_env_file_stdout_id.txt",
        DOCKER / "docker_run_runtime_nosuch_ignored_stdout_id.txt",
    ],
)
def test_run_prints_the_full_container_id(path: Path) -> None:
    printed = printed_id(text(path))
    assert CONTAINER_ID_RE.fullmatch(printed)
    assert len(printed) == 64


# --- inspect ---------------------------------------------------------------------------

EXPECTED_INSPECT = {
    "replica-r1": ("r1", ReplicaStatus.RUNNING, None, ("0000:17:00.0", "0000:18:00.0")),
    "replica-r2": ("r2", ReplicaStatus.EXITED, 0, ()),
    "replica-r3": ("r3", ReplicaStatus.FAILED, 3, ()),
    "replica-r4": ("r4", ReplicaStatus.FAILED, 137, ()),
    "replica-r5": ("r5", ReplicaStatus.FAILED, 137, ()),
}
INSPECT_FILES = {
    "replica-r1": "inspect_running_replica-r1.json",
    "replica-r2": "inspect_exited_0_replica-r2.json",
    "replica-r3": "inspect_exited_3_replica-r3.json",
    "replica-r4": "inspect_sigkill_137_replica-r4.json",
    "replica-r5": "inspect_oom_killed_memory_8m_replica-r5.json",
}


@pytest.mark.parametrize("engine", ["podman", "docker"])
@pytest.mark.parametrize("name", sorted(INSPECT_FILES))
def test_inspect_reads_every_engine(engine: str, name: str) -> None:
    path = ENGINE_DIRS[engine] / f"{engine}_{INSPECT_FILES[name]}"
    [item] = parse_inspect(text(path))
    state = item.state
    assert (state.replica_id, state.status, state.exit_code, state.gpus) == EXPECTED_INSPECT[name]
    # The reference, not the image id both engines put in the top-level Image.
    assert state.image == "localhost/bb:1"
    assert len(item.container_id) == 64
    # Docker's API names containers with a leading slash.
    assert item.name.lstrip("/") == name


@pytest.mark.parametrize("engine", ["podman", "docker"])
def test_inspect_of_a_present_and_a_missing_container(engine: str) -> None:
    code = 125 if engine == "podman" else 1
    base = ENGINE_DIRS[engine] / f"{engine}_inspect_one_present_one_missing_exit{code}"
    [item] = parse_inspect(text(base.with_name(base.name + "_stdout.txt")))
    assert item.state.replica_id == "r3"
    assert load_dialect(engine).no_such_container(text(base.with_name(base.name + ".txt")))
    missing = ENGINE_DIRS[engine] / f"{engine}_inspect_missing_container_exit{code}"
    assert parse_inspect(text(missing.with_name(missing.name + "_stdout.txt"))) == []


# --- events ----------------------------------------------------------------------------


def _fixture_events(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in text(path).splitlines() if line.strip()]


@pytest.mark.parametrize(
    "name", ["podman_events_format_json.jsonl", "podman_events_format_json_template.jsonl"]
)
def test_podman_events(name: str) -> None:
    path = PODMAN / name
    lines = text(path).encode().splitlines()
    changed = [podman.changed_container(line) for line in lines]
    events = _fixture_events(path)
    seen = {
        (str(e["Name"]), str(e["Status"]))
        for e, cid in zip(events, changed, strict=True)
        if cid is not None
    }
    # Every replica's start and died; removals; never create/init/cleanup/kill or images.
    replicas = {f"replica-r{i}" for i in range(1, 8)}
    assert {n for n, s in seen if s == "died"} == replicas
    assert {n for n, s in seen if s == "start"} == replicas
    assert {n for n, s in seen if s == "remove"} == {"replica-r2", "replica-r6"}
    assert {s for _, s in seen} == {"start", "died", "remove"}
    # The id is the container's full id, as inspect gives it.
    [r3] = parse_inspect(text(PODMAN / "podman_inspect_exited_3_replica-r3.json"))
    died_r3 = [c for e, c in zip(events, changed, strict=True) if e.get("ContainerExitCode") == 3]
    assert died_r3 == [r3.container_id]


@pytest.mark.parametrize(
    "name", ["docker_events_format_json.jsonl", "docker_events_format_json_template.jsonl"]
)
def test_docker_events(name: str) -> None:
    path = DOCKER / name
    lines = text(path).encode().splitlines()
    changed = [docker.changed_container(line) for line in lines]
    events = _fixture_events(path)
    seen: set[tuple[str, str]] = set()
    for event, cid in zip(events, changed, strict=True):
        if cid is None:
            continue
        actor = event["Actor"]
        assert isinstance(actor, dict)
        assert cid == actor["ID"] == event["id"]
        seen.add((actor["Attributes"]["name"], str(event["Action"])))
    # replica-rt ran with `--runtime nosuch`, which the compatible API ignores.
    replicas = {f"replica-r{i}" for i in range(1, 8)} | {"replica-rt"}
    assert {n for n, a in seen if a == "die"} == replicas
    assert {n for n, a in seen if a == "start"} == replicas
    assert {a for _, a in seen} <= {"start", "die", "remove", "destroy"}


@pytest.mark.parametrize("changed", [podman.changed_container, docker.changed_container])
def test_event_lines_that_are_not_events(changed: Callable[[bytes], str | None]) -> None:
    for line in (b"", b"   ", b"not json", b"[]", b'{"Type": "image", "Status": "pull"}'):
        assert changed(line) is None


# --- errors ----------------------------------------------------------------------------


def _error(engine: str, name: str) -> tuple[str, ContainerRuntimeError]:
    stderr = text(ENGINE_DIRS[engine] / name)
    dialect = load_dialect(engine)
    return stderr, failure(125, stderr, (), dialect.error_message, engine)


@pytest.mark.parametrize(
    ("engine", "name", "kind", "starts"),
    [
        ("podman", "podman_run_name_in_use_exit125.txt", NameInUse, "creating container storage"),
        (
            "docker",
            "docker_run_name_in_use_exit125.txt",
            NameInUse,
            "container create: creating container storage",
        ),
        (
            "podman",
            "podman_run_runtime_kata_not_installed_exit125.txt",
            RuntimeNotInstalled,
            'default OCI runtime "kata" not found',
        ),
        (
            "podman",
            "podman_run_runtime_io.containerd.kata.v2_exit125.txt",
            RuntimeNotInstalled,
            'default OCI runtime "io.containerd.kata.v2"',
        ),
        (
            "podman",
            "podman_run_missing_image_pull_never_exit125.txt",
            ImageNotFound,
            "localhost/nope:1: image not known",
        ),
        (
            "docker",
            "docker_run_missing_image_pull_never_exit125.txt",
            ImageNotFound,
            "no such image: localhost/nope:1",
        ),
        # An unreachable registry is not a missing image; the final Error line
        # is read, not the retry warnings before it.
        (
            "podman",
            "podman_run_missing_image_offline_exit125.txt",
            ContainerRuntimeError,
            "initializing source docker://localhost/nope:1",
        ),
        (
            "docker",
            "docker_run_missing_image_offline_exit125.txt",
            ContainerRuntimeError,
            "initializing source docker://localhost/nope:1",
        ),
        (
            "docker",
            "docker_run_d_device_dev_null_unknown_server_OS_exit125.txt",
            ContainerRuntimeError,
            "unknown server OS:",
        ),
    ],
)
def test_error_texts(engine: str, name: str, kind: type[Exception], starts: str) -> None:
    stderr, error = _error(engine, name)
    assert type(error) is kind
    assert str(error).startswith(starts)
    assert "\n" not in str(error)
    assert "Run 'docker run --help'" not in str(error)
    assert not load_dialect(engine).no_such_container(stderr)


@pytest.mark.parametrize(
    ("engine", "name"),
    [
        ("podman", "podman_inspect_missing_container_exit125.txt"),
        ("podman", "podman_stop_missing_container_exit125.txt"),
        ("podman", "podman_rm_missing_container_exit1.txt"),
        ("docker", "docker_inspect_missing_container_exit1.txt"),
        ("docker", "docker_stop_missing_container_exit1.txt"),
        ("docker", "docker_rm_missing_container_exit1.txt"),
        # Printed by `docker rm -f` of a missing container, which exits 0.
        ("docker", "docker_rm_f_missing_container_exit0.txt"),
    ],
)
def test_no_such_container(engine: str, name: str) -> None:
    stderr = text(ENGINE_DIRS[engine] / name)
    dialect = load_dialect(engine)
    assert dialect.no_such_container(stderr)
    assert dialect.error_message(stderr) is not None


def test_quiet_stderr_is_no_error() -> None:
    # `podman rm -f` of a missing container prints nothing and exits 0.
    assert text(PODMAN / "podman_rm_f_missing_container_exit0.txt") == ""
    for engine in ("podman", "docker"):
        dialect = load_dialect(engine)
        assert dialect.error_message("") is None
        assert not dialect.no_such_container("")
    # A grace that ran out is a warning, not an error.
    warned = text(PODMAN / "podman_stop_t_1_grace_expired_sigkill_stdout_stderr.txt")
    assert "level=warning" in warned
    assert podman.error_message(warned) is None
