"""nerdctl's output and errors, parsed from real captures (tests/fixtures/nerdctl/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fakes.nerdctl.fake_nerdctl import to_logfmt, tty_line
from vectorlay.adapters.runtime.labels import LABEL_GPUS, LABEL_REPLICA_ID, parse_gpu_label
from vectorlay.adapters.runtime.nerdctl import parse_event, parse_ps, ps_status_key
from vectorlay.adapters.runtime.output import Listed, one_per_replica, parse_inspect, replica_status
from vectorlay.adapters.runtime.stderr import (
    error_class,
    go_unquote,
    is_no_such_container,
    nerdctl_error,
)
from vectorlay.domain.agent.replicas import ContainerState
from vectorlay.domain.messages import ReplicaStatus
from vectorlay.errors import (
    ContainerRuntimeError,
    ImageNotFound,
    NameInUse,
    RuntimeNotInstalled,
    SnapshotterUnavailable,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "nerdctl"
PULL_DENIED = (
    'failed to resolve reference "docker.io/library/sha256:'
    'd61d5fd6f4418a52d4cdd28c66b83d11a402870b506347930827f6de7ee1f75c": pull access denied, '
    "repository does not exist or may require authorization: server message: "
    "insufficient_scope: authorization failed"
)
SHIM_MISSING = (
    'failed to start shim: failed to resolve runtime path: runtime "io.containerd.kata.v2" '
    'binary not installed "containerd-shim-kata-v2": file does not exist: unknown'
)


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


# --- errors ------------------------------------------------------------------

CASES = [
    (
        "nerdctl_run_image_not_found_pull_access_denied_with_progress.txt",
        ImageNotFound,
        PULL_DENIED,
    ),
    (
        "nerdctl_run_name_already_used_by_ID_v0.13.txt",
        NameInUse,
        'name "adguardhome" is already used by ID '
        '"a1e09c7badd41dd267050f3edeb16c9d6dabf5762fcbfc481eb1ae01ae34e64d"',
    ),
    (
        "nerdctl_run_name_already_used_by_empty_ID.txt",
        NameInUse,
        'name "foo" is already used by ID ""',
    ),
    (
        "nerdctl_run_kata_fc_snapshotter_not_loaded_devmapper.txt",
        SnapshotterUnavailable,
        "error unpacking image: failed to stat snapshot sha256:"
        "bce45ce613d34bff6a3404a4c2d56a5f72640f804c3d0bd67e2cf0bf97cb950c: "
        "snapshotter not loaded: devmapper: invalid argument",
    ),
    (
        "nerdctl_run_kata_cgroup_permission_denied_with_pull_progress.txt",
        ContainerRuntimeError,
        "failed to create shim task: Could not create the sandbox resource controller "
        "mkdir /sys/fs/cgroup/systemd/vc: permission denied: unknown",
    ),
    (
        "nerdctl_rm_multiple_IDs_found_with_prefix.txt",
        ContainerRuntimeError,
        "multiple IDs found with provided prefix: restarttest",
    ),
]


@pytest.mark.parametrize(("name", "cls", "message"), CASES, ids=[c[0][:40] for c in CASES])
@pytest.mark.parametrize("form", ["terminal", "pipe"])
def test_real_error_texts_map_to_domain_errors(
    name: str, cls: type[ContainerRuntimeError], message: str, form: str
) -> None:
    # The captures were taken on a terminal; the agent reads a pipe, where
    # logrus writes `time=… level=fatal msg="…"` instead.
    stderr = fixture(name) if form == "terminal" else to_logfmt(fixture(name))
    got = nerdctl_error(stderr)
    assert got == message
    assert error_class(got) is cls


def test_shim_binary_missing_as_containerd_words_it() -> None:
    # Only ctr's capture exists; nerdctl wraps the same containerd text.
    ctr = fixture("ctr_run_runtime_not_found_kata_shim_binary_not_installed.txt")
    wrapped = ctr.replace("ctr: ", "FATA[0000] failed to create shim task: ", 1)
    for stderr in (ctr, wrapped, to_logfmt(wrapped)):
        message = nerdctl_error(stderr)
        assert message is not None
        assert message.endswith(SHIM_MISSING)
        assert error_class(message) is RuntimeNotInstalled


def test_coloured_terminal_lines_lose_their_escapes_and_padding() -> None:
    stderr = tty_line("FATA", 'name "replica-a" is already used by ID ""') + "\n"
    assert "\x1b[" in stderr
    assert nerdctl_error(stderr) == 'name "replica-a" is already used by ID ""'


def test_fatal_wins_over_info_and_progress() -> None:
    stderr = fixture("nerdctl_run_image_not_found_pull_access_denied_with_progress.txt")
    message = nerdctl_error(stderr)
    assert message is not None
    assert "trying next host" not in message
    assert "elapsed" not in message
    assert not message.endswith(" ")


def test_plain_stderr_without_log_lines_gives_its_last_line() -> None:
    assert nerdctl_error("something broke\nreally broke  \n") == "really broke"
    assert nerdctl_error("") is None


def test_long_messages_are_bounded() -> None:
    message = nerdctl_error("FATA[0000] " + "x" * 5000 + "\n")
    assert message is not None
    assert len(message) <= 400


@pytest.mark.parametrize(
    "stderr",
    [
        "FATA[0000] 1 errors:\nno such container: replica-a\n",
        'time="2026-01-01T00:00:00Z" level=fatal msg="1 errors:\\nno such container: replica-a"\n',
        'time="2026-01-01T00:00:00Z" level=error msg="2 errors:\\nno such container: a\\n'
        'no such container: b"\n',
    ],
)
def test_no_such_container_is_recognised(stderr: str) -> None:
    assert is_no_such_container(stderr)


@pytest.mark.parametrize(
    "stderr",
    [
        "",
        "FATA[0000] 2 errors:\nno such container: a\nmultiple IDs found with provided prefix: b\n",
        'time="x" level=fatal msg="error gathering device information while adding custom '
        'device \\"/dev/vfio/25\\": no such file or directory"\n',
    ],
)
def test_other_failures_are_not_no_such_container(stderr: str) -> None:
    assert not is_no_such_container(stderr)


@pytest.mark.parametrize(
    ("token", "text"),
    [
        ('"plain"', "plain"),
        ('"say \\"hi\\""', 'say "hi"'),
        ('"a\\nb\\tc\\\\d"', "a\nb\tc\\d"),
        ('"\\u00e9\\x41\\U0001F600"', "éA😀"),
        ("bare", "bare"),
    ],
)
def test_go_unquote(token: str, text: str) -> None:
    assert go_unquote(token) == text


# --- ps ----------------------------------------------------------------------


def test_ps_line_from_finch() -> None:
    [entry] = parse_ps(fixture("finch_nerdctl_ps_format_json_compose_nginx.jsonl"))
    assert entry.container_id == "250762bf59eb"
    assert entry.names == "test-nginx_1-1"
    assert entry.status == "Up"


def test_ps_garbage_fails_the_whole_listing() -> None:
    # Skipping a line would make a live container look gone (and free its GPUs).
    with pytest.raises(ContainerRuntimeError, match="line 2"):
        parse_ps('{"ID":"abc"}\nWARN something\n')


@pytest.mark.parametrize(
    ("status", "key"),
    [
        ("Up", "Up"),
        ("Exited (0) 5 seconds ago", "Exited (0)"),
        ("Exited (137) About a minute ago", "Exited (137)"),
        ("Restarting (1) 2 seconds ago", "Restarting (1)"),
        ("Created", "Created"),
    ],
)
def test_ps_status_key_drops_the_age(status: str, key: str) -> None:
    assert ps_status_key(status) == key


# --- inspect -----------------------------------------------------------------


def labelled(name: str, labels: dict[str, str], **state: object) -> str:
    objects = json.loads(fixture(name))
    objects[0]["Config"]["Labels"].update(labels)
    objects[0]["State"].update(state)
    return json.dumps(objects, indent=4)


@pytest.mark.parametrize(
    "name",
    ["nerdctl_inspect_kata_runtime_container_nym.json", "nerdctl_inspect_runc_container_nym.json"],
)
def test_inspect_skips_containers_we_do_not_manage(name: str) -> None:
    assert parse_inspect(fixture(name)) == []


def test_inspect_reads_labels_from_the_json_object() -> None:
    text = labelled(
        "nerdctl_inspect_kata_runtime_container_nym.json",
        {LABEL_REPLICA_ID: "abc-123", LABEL_GPUS: "0000:17:00.0+0000:18:00.0"},
    )
    [item] = parse_inspect(text)
    assert item == Listed(
        "1de89e6c7815894e74155922cb4c4fd0524b0809000bb84e0ef5e0d98a8d7ed1",
        "minimum-fatal-localnet-nyxd",
        ContainerState(
            "abc-123",
            ReplicaStatus.RUNNING,
            None,
            ("0000:17:00.0", "0000:18:00.0"),
            "docker.io/library/localnet-nyxd:v0.60.1",
        ),
    )


@pytest.mark.parametrize(
    ("status", "code", "want"),
    [
        ("exited", 0, (ReplicaStatus.EXITED, 0)),
        ("exited", 137, (ReplicaStatus.FAILED, 137)),
        ("created", 0, (ReplicaStatus.FAILED, None)),
        ("", 0, (ReplicaStatus.FAILED, None)),
        ("paused", 0, (ReplicaStatus.RUNNING, None)),
        ("restarting", 1, (ReplicaStatus.RUNNING, None)),
        ("unknown", 0, (ReplicaStatus.FAILED, None)),
    ],
)
def test_inspect_status_mapping(
    status: str, code: int, want: tuple[ReplicaStatus, int | None]
) -> None:
    text = labelled(
        "nerdctl_inspect_runc_container_nym.json",
        {LABEL_REPLICA_ID: "r1"},
        Status=status,
        ExitCode=code,
    )
    [item] = parse_inspect(text)
    assert (item.state.status, item.state.exit_code) == want
    assert replica_status(status, code) == want


def test_inspect_state_null_of_older_nerdctl() -> None:
    objects = json.loads(fixture("nerdctl_inspect_runc_container_nym.json"))
    objects[0]["State"] = None
    objects[0]["Config"]["Labels"][LABEL_REPLICA_ID] = "r1"
    [item] = parse_inspect(json.dumps(objects))
    assert item.state.status is ReplicaStatus.FAILED


def test_inspect_invalid_replica_label_is_skipped() -> None:
    text = labelled("nerdctl_inspect_runc_container_nym.json", {LABEL_REPLICA_ID: "-bad id"})
    assert parse_inspect(text) == []


def test_unreadable_inspect_output_never_echoes_the_environment() -> None:
    objects = json.loads(fixture("nerdctl_inspect_runc_container_nym.json"))
    objects[0]["Config"]["Env"].append("API_KEY=hunter2-very-secret")
    objects[0]["Config"]["Labels"][LABEL_REPLICA_ID] = 5  # not a string
    with pytest.raises(ContainerRuntimeError) as caught:
        parse_inspect(json.dumps(objects))
    assert "hunter2" not in str(caught.value)


def test_gpu_label() -> None:
    assert parse_gpu_label("") == ()
    assert parse_gpu_label("0000:17:00.0") == ("0000:17:00.0",)
    assert parse_gpu_label("0000:17:00.0+0000:ca:00.0") == ("0000:17:00.0", "0000:ca:00.0")
    assert parse_gpu_label("0000:17:00.0+junk") == ("0000:17:00.0",)


def test_one_state_per_replica_prefers_its_own_name_then_running() -> None:
    running = ContainerState("a", ReplicaStatus.RUNNING)
    failed = ContainerState("a", ReplicaStatus.FAILED)
    other = ContainerState("b", ReplicaStatus.EXITED, 0)
    listed = [
        Listed("1", "stray", running),
        Listed("2", "replica-a", failed),
        Listed("3", "replica-b", other),
    ]
    assert one_per_replica(listed) == [failed, other]
    assert one_per_replica([Listed("1", "x", failed), Listed("2", "y", running)]) == [running]


# --- events ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "container_id"),
    [
        (
            "nerdctl_events_format_json_tasks_start_before_ID_field.jsonl",
            "51885cadba61b9640f0ea80eb716b2f2e2bc60b42595db07bd8759e06b270fdb",
        ),
        (
            "nerdctl_events_format_json_tasks_start_with_ID_Status.jsonl",
            "ea3b75d7c5cf7e81b13f151dc7b4875e13c4f19776ca4c74f213866f0b016971",
        ),
    ],
)
def test_event_lines_of_both_nerdctl_generations(name: str, container_id: str) -> None:
    event = parse_event(fixture(name).strip())
    assert event is not None
    assert event.topic == "/tasks/start"
    assert event.container_id == container_id
    assert event.process_id == ""


def test_exit_event_of_an_exec_names_its_process() -> None:
    payload = json.dumps({"container_id": "c1", "id": "exec-7", "pid": 9, "exit_status": 0})
    line = json.dumps({"Topic": "/tasks/exit", "Namespace": "default", "Event": payload})
    event = parse_event(line)
    assert event is not None
    assert (event.container_id, event.process_id) == ("c1", "exec-7")


def test_container_delete_event_names_the_container_in_id() -> None:
    line = json.dumps({"Topic": "/containers/delete", "Event": json.dumps({"id": "c1"})})
    event = parse_event(line.encode())
    assert event is not None
    assert (event.topic, event.container_id, event.process_id) == ("/containers/delete", "c1", "")


@pytest.mark.parametrize("line", ["", "   ", "not json", "[1, 2]", '{"Topic": 5}'])
def test_non_events_are_ignored(line: str) -> None:
    assert parse_event(line) is None


def test_gpu_labels_keep_vmd_domains_above_ffff() -> None:
    # Intel VMD puts devices in PCI domain 10000; the probe reports them so.
    assert parse_gpu_label("10000:e1:00.0+0000:17:00.0") == ("10000:e1:00.0", "0000:17:00.0")


def test_generic_inspect_wording_counts_as_no_such_container() -> None:
    stderr = 'time="2026-01-01T00:00:00Z" level=fatal msg="1 errors:\\nno such object: replica-x"\n'
    assert is_no_such_container(stderr)
