"""The node-id label on argv and in inspect output; OOM events as nerdctl prints them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vectorlay.adapters.runtime.argv import check_spec, run_argv
from vectorlay.adapters.runtime.nerdctl import changed_container, oom_container
from vectorlay.adapters.runtime.output import parse_inspect
from vectorlay.domain.agent.replicas import ContainerSpec
from vectorlay.errors import ContainerRuntimeError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "nerdctl"
OOM_FIXTURE = (
    FIXTURES / "nerdctl_events_format_json_tasks_oom_then_exit_v2.0-2.3_RECONSTRUCTED.jsonl"
)
CID = "ea3b75d7c5cf7e81b13f151dc7b4875e13c4f19776ca4c74f213866f0b016971"


def test_run_argv_labels_the_container_with_its_node() -> None:
    argv = run_argv("nerdctl", "kata", ContainerSpec("r1", "nginx", node_id="node-7f"), None)
    assert argv[argv.index("vectorlay.node-id=node-7f") - 1] == "--label"
    # Before registration (no node id) there is no node label at all.
    bare = run_argv("nerdctl", "kata", ContainerSpec("r1", "nginx"), None)
    assert not any(a.startswith("vectorlay.node-id") for a in bare)


def test_an_unprintable_node_id_never_reaches_argv() -> None:
    with pytest.raises(ContainerRuntimeError, match="node id"):
        check_spec(ContainerSpec("r1", "nginx", node_id="node\n-x"))


def test_inspect_reads_the_node_label() -> None:
    items = json.loads((FIXTURES / "nerdctl_inspect_kata_runtime_container_nym.json").read_text())
    labels = items[0]["Config"].setdefault("Labels", {})
    labels["vectorlay.replica-id"] = "r1"
    labels["vectorlay.node-id"] = "node-7f"
    (state,) = (x.state for x in parse_inspect(json.dumps(items)))
    assert state.node_id == "node-7f"
    del labels["vectorlay.node-id"]
    (state,) = (x.state for x in parse_inspect(json.dumps(items)))
    assert state.node_id is None


def test_oom_events_name_their_container() -> None:
    lines = [line.encode() for line in OOM_FIXTURE.read_text().splitlines()]
    records = [line for line in lines if line.strip()]
    assert len(records) == 2  # each record is followed by an empty line
    assert oom_container(records[0]) == CID
    assert oom_container(records[1]) is None  # the /tasks/exit record
    assert changed_container(records[0]) == CID
    assert changed_container(records[1]) == CID
    assert oom_container(b"") is None
    assert oom_container(b"not json") is None
