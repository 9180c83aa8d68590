"""The runtime's record of OOM kills from the event stream: bounded, oldest out first."""

from __future__ import annotations

from vectorlay.adapters.runtime.oomkills import OomKills
from vectorlay.adapters.runtime.output import Listed
from vectorlay.domain.agent.replicas import ContainerState
from vectorlay.domain.messages import ReplicaStatus as RS


def test_ended_containers_on_record_are_marked_running_ones_are_not() -> None:
    kills = OomKills()
    kills.note("c1")
    kills.note("c2")
    listed = [
        Listed("c1", "replica-a", ContainerState("a", RS.FAILED, 137)),
        Listed("c2", "replica-b", ContainerState("b", RS.RUNNING)),
        Listed("c3", "replica-c", ContainerState("c", RS.FAILED, 137)),
    ]
    assert [i.state.oom_killed for i in kills.mark(listed)] == [True, False, False]


def test_the_record_is_bounded_and_a_repeat_counts_as_new() -> None:
    kills = OomKills(limit=2)
    for cid in ("a", "b", "a", "c"):
        kills.note(cid)
    assert "b" not in kills
    assert "a" in kills
    assert "c" in kills
