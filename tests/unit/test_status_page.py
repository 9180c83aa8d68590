"""The status page's HTML: escaping, folding of old stopped replicas, GPU figures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.unit.test_fleet import WALL, add_node, deploy, ok
from vectorlay.adapters.controlplane.statuspage import render
from vectorlay.domain.fleet.fleet import Fleet
from vectorlay.domain.liveness import LivenessPolicy
from vectorlay.domain.messages import ReplicaStatus as R


def test_old_stopped_replicas_fold_away_and_figures_show() -> None:
    fleet = Fleet(LivenessPolicy(60.0), now=0.0)
    add_node(fleet, "node-a", gpus=2)
    for rid in ("old", "recent", "live"):
        fleet.deploy(deploy(rid, 0))
        fleet.deploy_result("node-a", ok(rid))
    for rid in ("old", "recent"):
        fleet.stop(rid)
        fleet.stop_result("node-a", ok(rid, R.STOPPED))
    now = datetime(2026, 1, 1, 15, 0, tzinfo=UTC)
    changed = {"old": now - timedelta(hours=2), "recent": now - timedelta(minutes=5)}
    page = render(fleet, changed, now)
    folded = page[page.index("<details>") :]
    assert "1 stopped more than an hour ago" in folded
    assert ">old<" in folded
    assert ">recent<" not in folded
    assert ">recent<" in page
    assert "2 / 2 / 2" in page
    assert WALL.isoformat()[:10] in page  # last seen


def test_values_are_escaped() -> None:
    fleet = Fleet(LivenessPolicy(60.0), now=0.0)
    add_node(fleet, "node-<b>", gpus=0)
    page = render(fleet, {}, datetime(2026, 1, 1, tzinfo=UTC))
    assert "node-&lt;b&gt;" in page
    assert "node-<b>" not in page
