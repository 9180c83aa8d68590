"""Containers removed or killed behind the agents' backs, two agent identities on one host.

Two agents share one fake host and one fake nerdctl, each with its own state
directory: two node identities, as after a wiped ``/var/lib/vectorlay`` or
in a demo.  Each round deploys a few replicas (on either node), then does to
one of their containers what an operator or the kernel might: ``nerdctl rm
-f``, ``nerdctl kill`` (SIGKILL or SIGTERM) or an OOM kill, and stops a few
replicas through the API.

Invariants: the control plane's view converges to what the runtime holds
within 2 heartbeat intervals (a removed container's replica ``failed`` with
"container removed outside the agent", a killed one ``failed`` with its
exit code and reason, the others ``running``); no container is stopped by an
agent that was not asked to stop it (every ``nerdctl stop`` is of a replica
the test stopped, and comes from no other node); every container carries the
node-id label of the node the control plane has it on; one container per
replica and no GPU named by two running containers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from tests.faults.scenarios import Tally, _check_containers, round_indexes, round_rng, timed
from tests.support import AgentNode, online, reaping, wait_for
from tests.support import ControlPlaneProcess as ControlPlaneProc
from vectorlay.adapters.runtime import LABEL_NODE_ID, LABEL_REPLICA_ID

INTERVAL = 1.0  # heartbeat interval of both agents, seconds
CONVERGE_WITHIN = 2 * INTERVAL  # the invariant: two heartbeat intervals
ACTIONS = ("rm", "kill", "term", "oom")
EXPECTED = {
    "rm": (None, "container removed outside the agent"),
    "kill": (137, "container exited with code 137 (killed by SIGKILL)"),
    "term": (143, "container exited with code 143 (killed by SIGTERM)"),
    "oom": (137, "container exited with code 137 (killed: out of memory)"),
}


def behind_the_back(root: Path, rounds: int, seed: int, *, only: int | None = None) -> Tally:
    """Remove and kill containers by hand while two agent identities share the host."""

    def run(tally: Tally) -> None:
        with reaping() as reaper:
            cp = ControlPlaneProc(root / "cp", reaper).start()
            first = AgentNode.build(root / "a", reaper)
            (root / "b").mkdir(parents=True, exist_ok=True)
            # Same host, same runtime, another state directory: another identity.
            second = AgentNode(root / "b", first.host, first.nerdctl, reaper)
            agents = [
                node.agent(cp.url, interval=INTERVAL, log_level="info").start(reaper)
                for node in (first, second)
            ]
            nodes = {online(cp, first): "a", online(cp, second): "b"}
            asked_to_stop: set[str] = set()
            slowest = 0.0
            for r in round_indexes(rounds, only):
                rng = round_rng(seed, r)
                rids = _deploy(tally, cp, r, rng.randint(2, 3), rng.random() < 0.5)
                if rng.random() < 0.3:
                    # An agent restarts while the other identity's containers run:
                    # it adopts its own only.
                    which = rng.randrange(2)
                    node = (first, second)[which]
                    if agents[which].terminate() != 0:
                        tally.fail(f"agent {'ab'[which]} did not exit 0 on SIGTERM")
                    agents[which] = node.agent(
                        cp.url, interval=INTERVAL, log_level="info", log_name=f"agent-{r}.log"
                    ).start(reaper)
                    online(cp, node)
                    tally.info["agent restarts"] += 1
                    for rid in rids:
                        _still_running(tally, cp, rid)
                if rids:
                    victim = rng.choice(rids)
                    action = rng.choice(ACTIONS)
                    tally.info[f"containers {action}"] += 1
                    started = time.monotonic()
                    _behind_the_back(first, victim, action)
                    took = _converged(tally, cp, victim, action)
                    slowest = max(slowest, took or 0.0)
                    for rid in rids:
                        if rid != victim:
                            _still_running(tally, cp, rid)
                    if time.monotonic() - started > 30:
                        tally.fail(f"{victim}: the round took over 30 s")
                # Stop everything of this round: the owners remove their containers.
                for rid in rids:
                    if cp.request("DELETE", f"/v1/replicas/{rid}").status_code == 202:
                        asked_to_stop.add(rid)
                    else:
                        tally.fail(f"DELETE {rid} refused")
                _all_stopped(tally, cp, first, rids)
                _check_labels(tally, cp, first, nodes)
                _check_containers(tally, first)
                for agent in agents:
                    if not agent.alive():
                        tally.fail("an agent process died")
                tally.end_round(r)
            tally.info["slowest convergence (ms)"] = round(slowest * 1000)
            _check_stops(tally, first, asked_to_stop)
            logs = [p.read_text() for p in root.glob("*/agent*.log")]
            if not any("another node identity" in log for log in logs):
                tally.fail("no agent said it leaves another identity's containers alone")

    return timed(run, Tally("behind-the-back", seed))


def _deploy(tally: Tally, cp: ControlPlaneProc, r: int, count: int, gpu: bool) -> list[str]:
    rids: list[str] = []
    for i in range(count):
        rid = f"bb-{r + 1}-{i}"
        body = {"image": "ghcr.io/acme/llm:1.2", "replica_id": rid, "gpu_count": int(gpu)}
        response = cp.request("POST", "/v1/replicas", body)
        if response.status_code != 201:
            tally.fail(f"POST {rid}: HTTP {response.status_code} {response.text[:200]}")
            continue
        rids.append(rid)
    ok: list[str] = []
    for rid in rids:
        try:
            wait_for(partial(_started, cp, rid), 20, f"{rid} started")
        except AssertionError as exc:
            tally.fail(str(exc))
            continue
        view = cp.replica(rid)
        if view["status"] == "running":
            ok.append(rid)
        else:
            tally.fail(f"{rid}: {view['status']} ({view['error']}) instead of running")
    return ok


def _started(cp: ControlPlaneProc, rid: str) -> bool:
    return bool(cp.replica(rid)["status"] != "pending")


def _behind_the_back(node: AgentNode, rid: str, action: str) -> None:
    name = f"replica-{rid}"
    if action == "rm":
        node.nerdctl.cli("rm", "-f", name)
    elif action == "kill":
        node.nerdctl.cli("kill", name)
    elif action == "term":
        node.nerdctl.cli("kill", "-s", "SIGTERM", name)
    else:
        node.nerdctl.oom(name)


def _converged(tally: Tally, cp: ControlPlaneProc, rid: str, action: str) -> float | None:
    """Seconds until the control plane shows what the runtime holds; ``None`` if never."""
    code, error = EXPECTED[action]
    started = time.monotonic()

    def shown() -> dict[str, Any] | None:
        view: dict[str, Any] = cp.replica(rid)
        if (view["status"], view["exit_code"], view["error"]) == ("failed", code, error):
            return view
        return None

    try:
        wait_for(shown, CONVERGE_WITHIN + 10.0, f"{rid} shown failed after {action}", 0.02)
    except AssertionError:
        view = cp.replica(rid)
        tally.fail(
            f"{rid} after {action}: the control plane shows {view['status']}, "
            f"exit code {view['exit_code']}, error {view['error']!r}"
        )
        return None
    took = time.monotonic() - started
    if took > CONVERGE_WITHIN:
        tally.fail(f"{rid} after {action}: shown after {took:.2f} s (> {CONVERGE_WITHIN:g} s)")
    return took


def _still_running(tally: Tally, cp: ControlPlaneProc, rid: str) -> None:
    view = cp.replica(rid)
    if view["status"] != "running":
        tally.fail(f"{rid} was not touched but is {view['status']} ({view['error']})")


def _all_stopped(tally: Tally, cp: ControlPlaneProc, node: AgentNode, rids: Sequence[str]) -> None:
    def left() -> list[str]:
        out = [r for r in rids if cp.replica(r)["status"] != "stopped"]
        return out + [r for r in rids if node.containers_of(r)]

    try:
        wait_for(lambda: not left() or None, 20, "the round's replicas stopped and removed")
    except AssertionError:
        tally.lost += len(left())
        tally.fail(f"not stopped or not removed: {left()}")


def _check_labels(
    tally: Tally, cp: ControlPlaneProc, node: AgentNode, nodes: dict[str, str]
) -> None:
    """Every container is labelled with the node the control plane has it on."""
    for container in node.nerdctl.containers():
        labels = container.get("labels") or {}
        rid = labels.get(LABEL_REPLICA_ID)
        if rid is None:
            continue
        owner = cp.replica(rid)["node_id"]
        if labels.get(LABEL_NODE_ID) != owner:
            tally.fail(f"{rid}: labelled {labels.get(LABEL_NODE_ID)}, on {owner}")
        if owner not in nodes:
            tally.fail(f"{rid}: on an unknown node {owner}")


def _check_stops(tally: Tally, node: AgentNode, asked: set[str]) -> None:
    """No agent stopped a container nobody asked it to stop."""
    for call in node.nerdctl.calls():
        if call.op != "stop":
            continue
        names = [a for a in call.argv if a.startswith("replica-")]
        for name in names:
            rid = name.removeprefix("replica-")
            if rid not in asked:
                tally.fail(f"{name} was stopped though nobody asked")
    tally.info["stops asked"] = len(asked)


__all__ = ["behind_the_back"]
