"""The fault and abuse scenarios, each a function that runs N rounds and tallies.

Every scenario returns a :class:`Tally` instead of raising at the first
broken invariant, so that ``benchmarks/faults.py`` can run long campaigns
and print what happened; the tests in this package run the same functions
with a few rounds and assert a clean tally.  A round is one unit of abuse:
one fuzzed batch, one control-plane restart, one agent crash, ...

Replay: round ``r`` (counted from 1) of a scenario run with ``seed`` draws
every random choice from ``round_rng(seed, r - 1)``, that is
``random.Random(f"{seed}/{r}")``, whatever ran before it; the hypothesis
scenarios generate their batches from one run seeded with ``seed`` and as
many examples as rounds, and execute only the rounds asked for.  So the seed,
the number of rounds and a round number name the same choices again;
``only=r`` runs that round alone.  Timing (processes, the scheduler) is not
replayed, and a round run alone misses what earlier rounds left behind.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import socket
import ssl
import string
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed

from tests.faults.frames import (
    MAX_FRAME,
    SECRET_MARK,
    Expected,
    Frame,
    batches,
    image_ok,
    leaks,
)
from tests.faults.inproc import run_fuzz_session
from tests.faults.recording import Collector, Relay, max_gap
from tests.support import (
    ADMIN_TOKEN,
    NODE_TOKEN,
    ORG_TOKEN,
    AgentNode,
    Reaper,
    in_flight,
    kill_orphans,
    node_id_of,
    online,
    reaping,
    wait_for,
)
from tests.support import ControlPlaneProcess as ControlPlaneProc
from tests.support import Process as Proc
from tests.support.wspeer import WsPeer, make_certificates, register
from vectorlay.domain.agent.heartbeat import DEFAULT_RECONNECT_CAP
from vectorlay.domain.messages import (
    Deploy,
    DeployPayload,
    DeployResult,
    Error,
    Heartbeat,
    Register,
    RegistrationSuccess,
    RegistrationSuccessPayload,
    ReplicaStatus,
    Stop,
    StopPayload,
    StopResult,
    SystemInfo,
)

INTERVAL = 1.0  # heartbeat interval of the agents under test, seconds
CADENCE = 1.5  # the longest heartbeat gap allowed, in intervals
CP_INTERVAL = 0.5  # heartbeat interval of the agents talking to a real control plane
# A session the agent counts as good (system_info sent, one heartbeat interval
# up) resets its reconnect backoff (docs/protocol.md, "Reconnect and backoff").
GOOD_SESSION = 1.5 * CP_INTERVAL
# How long a node may take to come back after the control plane restarts: the
# agent may wait up to the backoff cap before its next attempt, then connect,
# probe the host and send system_info.
RECONNECT_WAIT = DEFAULT_RECONNECT_CAP + 30.0


def round_rng(seed: int, r: int) -> random.Random:
    """Where round index ``r`` (round ``r + 1``) draws its choices, whatever ran before it."""
    return random.Random(f"{seed}/{r + 1}")


def round_indexes(rounds: int, only: int | None = None) -> range:
    """Indexes of the rounds to run: all ``rounds``, or round ``only`` (from 1) alone."""
    if only is None:
        return range(rounds)
    if not 1 <= only <= rounds:
        raise ValueError(f"round {only} is not one of rounds 1 to {rounds}")
    return range(only - 1, only)


@dataclass
class Tally:
    """What one scenario saw over its rounds."""

    scenario: str
    seed: int | None = None  # what the rounds' choices derive from
    rounds: int = 0  # rounds run
    failures: int = 0  # rounds in which some invariant broke
    lost: int = 0  # commands without an answer
    duplicates: int = 0  # second containers for one replica id
    double_gpus: int = 0  # GPUs held by two live replicas
    secrets: int = 0  # tokens or env values seen where they must not be
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    info: Counter[str] = field(default_factory=Counter)  # what the abuse consisted of
    failed_rounds: list[int] = field(default_factory=list)  # numbers, from 1
    _round: list[str] = field(default_factory=list)

    def fail(self, text: str) -> None:
        self._round.append(text)

    def end_round(self, r: int) -> None:
        """Round index ``r`` is over: its violations are noted as round ``r + 1``."""
        self.rounds += 1
        if self._round:
            self.failures += 1
            self.failed_rounds.append(r + 1)
            self.notes.extend(f"round {r + 1}: {text}" for text in self._round)
        self._round = []

    def finish(self) -> None:
        """Violations noted after the last round count as one more failure."""
        if self._round:
            self.failures += 1
            self.notes.extend(f"end: {text}" for text in self._round)
            self._round = []

    @property
    def clean(self) -> bool:
        return (
            self.failures == 0
            and self.lost == 0
            and self.duplicates == 0
            and self.double_gpus == 0
            and self.secrets == 0
        )

    def report(self) -> str:
        seed = f" (seed {self.seed})" if self.seed is not None else ""
        head = (
            f"{self.scenario}{seed}: {self.rounds} rounds, {self.failures} failures, "
            f"{self.lost} lost, "
            f"{self.duplicates} duplicates, {self.double_gpus} double GPUs, {self.secrets} secrets"
        )
        return "\n".join([head, *self.notes[:40]])


def _check_containers(tally: Tally, node: AgentNode) -> None:
    """No replica ran twice and no GPU is held by two running containers."""
    dups = node.duplicate_containers()
    if dups:
        tally.duplicates += sum(n - 1 for n in dups.values())
        tally.fail(f"duplicate containers: {dups}")
    doubled = node.double_assigned_gpus()
    if doubled:
        tally.double_gpus += len(doubled)
        tally.fail(f"GPUs held by two running containers: {doubled}")


def timed(run: Callable[[Tally], None], tally: Tally) -> Tally:
    started = time.monotonic()
    try:
        run(tally)
    finally:
        tally.finish()
        tally.seconds = time.monotonic() - started
    return tally


def _hypothesis(rounds: int, seed: int) -> Callable[[Any], Any]:
    """One generated example per round, no shrinking: a campaign counts, it does not minimise."""

    def apply(test: Any) -> Any:
        return hypothesis_seed(seed)(
            settings(
                max_examples=rounds,
                phases=[Phase.generate],
                database=None,
                deadline=None,
                suppress_health_check=list(HealthCheck),
            )(test)
        )

    return apply


def _scan(tally: Tally, texts: Sequence[str], secrets: Sequence[str], where: str) -> None:
    """Count every appearance of a secret (token, env value, marker) in ``texts``."""
    hits = 0
    sample = ""
    for text in texts:
        found = leaks(text) + sum(text.count(s) for s in secrets if s and SECRET_MARK not in s)
        if found and not sample:
            at = min(
                (
                    i
                    for i in [text.find(SECRET_MARK[:5]), *(text.find(s) for s in secrets if s)]
                    if i >= 0
                ),
                default=0,
            )
            sample = text[max(0, at - 80) : at + 40]
        hits += found
    if hits:
        tally.secrets += hits
        tally.fail(f"{hits} secret(s) seen in {where}, e.g. ...{sample!r}...")


def secret_value(rng: random.Random) -> str:
    tail = "".join(rng.choice(string.ascii_letters + string.digits + "=#$ '\"") for _ in range(12))
    return f"{SECRET_MARK}{rng.getrandbits(32):08x}{tail}z"


# --- wire fuzzing ------------------------------------------------------------------------------


def wire_fuzz_inprocess(
    rounds: int, seed: int, backend: str = "asyncio", *, only: int | None = None
) -> Tally:
    """Hypothesis batches against a live in-memory agent session, one session per round."""

    def run(tally: Tally) -> None:
        wanted = set(round_indexes(rounds, only))
        generated = itertools.count()

        @_hypothesis(rounds, seed)
        @given(batches)
        def one_round(frames: list[Frame]) -> None:
            r = next(generated)
            if r not in wanted:
                return
            outcome = run_fuzz_session(frames, backend)
            tally.lost += outcome.lost
            tally.double_gpus += outcome.double_gpus
            tally.secrets += outcome.secrets
            for text in outcome.violations:
                tally.fail(text)
            tally.end_round(r)

        one_round()

    return timed(run, Tally(f"wire fuzz, in-process ({backend})", seed))


def wire_fuzz_process(root: Path, rounds: int, seed: int, *, only: int | None = None) -> Tally:
    """Hypothesis batches against the real agent process over a real WebSocket."""

    def run(tally: Tally) -> None:
        wanted = set(round_indexes(rounds, only))
        generated = itertools.count()

        with reaping() as reaper:
            peer = WsPeer().start()
            reaper.peers.append(peer)
            node = AgentNode.build(root, reaper)
            agent = node.agent(peer.url, interval=INTERVAL).start(reaper)
            session = register(peer)
            collector = Collector(session).start()
            runnable: Counter[str] = Counter()

            @_hypothesis(rounds, seed)
            @given(batches)
            def one_round(frames: list[Frame]) -> None:
                r = next(generated)
                if r not in wanted:
                    return
                start = len(collector.items)
                expected = Expected.of(frames)
                runnable.update(expected.runnable)
                for frame in frames:
                    if isinstance(frame, bytes):
                        session.send_bytes(frame)
                    else:
                        session.send_text(frame)
                _await_answers(tally, collector, start, expected, frames)
                if not agent.alive():
                    tally.fail("the agent process died")
                tally.end_round(r)

            try:
                one_round()
                _check_cadence(tally, collector.times(Heartbeat), "while fuzzed")
                # Invalid UTF-8 in a text frame is a WebSocket-level error: the
                # session ends (1007) and the agent comes back.
                session.send_raw(b"\x81\x02\xff\xfe")
                again = peer.accept(timeout=15)
                if not isinstance(again.receive_message(timeout=10), SystemInfo):
                    tally.fail("no system_info after invalid UTF-8 closed the session")
            finally:
                collector.stop()
            if not agent.alive():
                tally.fail("the agent process died")
            _check_runs(tally, node, runnable)
            _scan(tally, [agent.log, *_argvs(node)], (ORG_TOKEN, NODE_TOKEN), "logs or argv")
            _stop_agent(tally, agent, node)

    return timed(run, Tally("wire fuzz, agent process", seed))


def _stop_agent(tally: Tally, agent: Proc, node: AgentNode) -> None:
    """SIGTERM: exit 0, and no nerdctl call (the events stream included) left behind."""
    if agent.terminate() != 0:
        tally.fail("the agent did not exit 0 on SIGTERM")
    try:
        wait_for(lambda: not in_flight(node.nerdctl, events=True), 5, "nerdctl calls to end")
    except AssertionError:
        tally.fail(
            f"nerdctl calls left running after SIGTERM: {in_flight(node.nerdctl, events=True)}"
        )


def _await_answers(
    tally: Tally, collector: Collector, start: int, expected: Expected, frames: Sequence[Frame]
) -> None:
    def counts() -> tuple[Counter[tuple[str, str]], int]:
        results: Counter[tuple[str, str]] = Counter()
        errors = 0
        for item in collector.items[start:]:
            msg = item.message
            if isinstance(msg, DeployResult):
                results["deploy", msg.payload.replica_id] += 1
            elif isinstance(msg, StopResult):
                results["stop", msg.payload.replica_id] += 1
            elif isinstance(msg, Error):
                errors += 1
        return results, errors

    def satisfied() -> bool:
        return expected.answered(*counts())

    deadline = time.monotonic() + 20
    while not satisfied() and time.monotonic() < deadline and collector.closed is None:
        time.sleep(0.02)
    time.sleep(0.2)  # room for a duplicate to show up
    verdict = expected.judge(*counts())
    tally.lost += verdict.lost
    for problem in verdict.problems:
        tally.fail(problem)
    if verdict.problems:
        tally.fail(f"  the batch: {[_show(f, 120) for f in frames]}")
    for item in collector.items[start:]:
        size = len(item.frame) if isinstance(item.frame, bytes) else len(item.frame.encode())
        if size > MAX_FRAME or isinstance(item.frame, bytes):
            tally.fail("the agent sent a binary frame or one over 1 MiB")
        tally.secrets += leaks(str(item.frame))
    if collector.closed is not None:
        tally.fail(f"the session ended: {collector.closed}")


def _show(frame: Frame, limit: int = 300) -> str:
    text = repr(frame)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(frame)} long)"


def _check_cadence(tally: Tally, times: Sequence[float], when: str) -> None:
    gap = max_gap(times)
    if gap > CADENCE * INTERVAL:
        tally.fail(f"heartbeat gap {gap:.2f} s {when} (interval {INTERVAL:g} s)")


def _argvs(node: AgentNode) -> list[str]:
    return [" ".join(call.argv) for call in node.nerdctl.calls()]


def _label(argv: Sequence[str], key: str) -> str | None:
    for a, b in itertools.pairwise(argv):
        if a == "--label" and b.startswith(f"{key}="):
            return b.split("=", 1)[1]
    return None


def _check_runs(tally: Tally, node: AgentNode, runnable: Counter[str]) -> None:
    """Every ``nerdctl run`` was for a valid deploy, and never twice for one."""
    started: Counter[str] = Counter()
    for call in node.nerdctl.calls():
        if call.op != "run":
            continue
        rid = _label(call.argv, "vectorlay.replica-id")
        if rid is None or rid not in runnable or not image_ok(call.argv[-1]):
            tally.fail(f"an invalid deploy reached nerdctl: {call.argv[-8:]}")
            continue
        if call.rc == 0:
            started[rid] += 1
    for rid, n in started.items():
        if n > runnable[rid]:
            tally.duplicates += n - 1
            tally.fail(f"{rid!r}: {n} containers started for {runnable[rid]} deploys")
    _check_containers(tally, node)


# --- control-plane chaos ---------------------------------------------------------------------


def control_plane_chaos(root: Path, rounds: int, seed: int, *, only: int | None = None) -> Tally:
    """Restart the control plane (SIGKILL or SIGTERM) while deploys and stops are in flight."""

    def run(tally: Tally) -> None:
        with reaping() as reaper:
            cp = ControlPlaneProc(root / "cp", reaper).start()
            relay = Relay(cp.url).start()
            reaper.peers.append(relay)
            node = AgentNode.build(root / "node", reaper)
            agent = node.agent(relay.url, interval=CP_INTERVAL).start(reaper)
            node_id = online(cp, node)
            live: list[str] = []
            stopped: list[str] = []
            secrets: list[str] = []
            for r in round_indexes(rounds, only):
                rng = round_rng(seed, r)
                _back_for_good(tally, cp, node)
                # A slow runtime keeps commands in flight when the control plane goes.
                node.nerdctl.delay("run", rng.uniform(0.3, 1.2), times=2)
                if rng.random() < 0.5:
                    node.nerdctl.delay("stop", rng.uniform(0.3, 1.0), times=1)
                for i in range(rng.randint(1, 2)):
                    rid = f"cc-{r}-{i}"
                    secret = secret_value(rng)
                    if _post_replica(tally, cp, rid, rng.choice([0, 0, 1]), {"API_KEY": secret}):
                        live.append(rid)
                        secrets.append(secret)
                if len(live) > 2 and rng.random() < 0.6:
                    rid = live.pop(rng.randrange(len(live) - 1))
                    if cp.request("DELETE", f"/v1/replicas/{rid}").status_code == 202:
                        stopped.append(rid)
                    else:
                        tally.fail(f"DELETE {rid} refused")
                time.sleep(rng.uniform(0.0, 0.8))
                if rng.random() < 0.5:
                    cp.kill()
                    tally.info["control plane SIGKILLed"] += 1
                else:
                    cp.terminate()
                    tally.info["control plane SIGTERMed"] += 1
                tally.info["commands in flight at the restart"] += len(cp.unanswered())
                time.sleep(rng.uniform(0.0, 0.5))
                cp.start()
                if not agent.alive():
                    tally.fail("the agent process died")
                tally.end_round(r)
            with contextlib.suppress(AssertionError):  # _converge says what is missing
                online(cp, node, timeout=RECONNECT_WAIT)
            _converge(tally, cp, node, live, stopped)
            _check_deliveries(tally, relay, live, stopped)
            for rid in live:
                stops = [c for c in node.nerdctl.calls() if c.op in ("stop", "rm")]
                if any(f"replica-{rid}" in c.argv for c in stops):
                    tally.fail(f"{rid} was stopped though nobody asked (a disconnect?)")
            _check_runs(tally, node, Counter({rid: 1 for rid in live + stopped}))
            _check_gpus_free(tally, cp, node_id, live)
            _scan(
                tally,
                [agent.log, cp.log, *cp.responses, *_argvs(node)],
                (ORG_TOKEN, NODE_TOKEN, ADMIN_TOKEN, _node_token(node), *secrets),
                "logs, argv or API answers",
            )
            _stop_agent(tally, agent, node)

    return timed(run, Tally("control-plane restarts", seed))


def _back_for_good(tally: Tally, cp: ControlPlaneProc, node: AgentNode) -> None:
    """Wait for the node's new session, then keep it up long enough to reset the backoff.

    After a session shorter than one heartbeat interval the agent's next wait
    grows, up to ``DEFAULT_RECONNECT_CAP``.  Restarts that came that soon,
    round after round, once made it wait longer than this scenario waited for
    the node, and the round's deploys found no online node (HTTP 409).
    """
    try:
        online(cp, node, timeout=RECONNECT_WAIT)
    except AssertionError as exc:
        tally.fail(str(exc))
        return
    time.sleep(GOOD_SESSION)


def _post_replica(
    tally: Tally, cp: ControlPlaneProc, rid: str, gpus: int, env: dict[str, str]
) -> bool:
    body = {"image": "ghcr.io/acme/llm:1.2", "replica_id": rid, "gpu_count": gpus, "env_vars": env}
    response = cp.request("POST", "/v1/replicas", body)
    if response.status_code == 409 and gpus:
        body["gpu_count"] = 0
        response = cp.request("POST", "/v1/replicas", body)
    if response.status_code != 201:
        tally.fail(f"POST {rid}: HTTP {response.status_code} {response.text[:200]}")
        return False
    return True


def _node_token(node: AgentNode) -> str:
    try:
        return str(json.loads(node.node_json.read_text())["node_token"])
    except (OSError, ValueError, KeyError):
        return ""


def _converge(
    tally: Tally,
    cp: ControlPlaneProc,
    node: AgentNode,
    live: Sequence[str],
    stopped: Sequence[str],
    timeout: float = 60.0,
) -> None:
    """Wait until the control plane's view matches what was asked; count what never did."""

    def pending() -> list[str]:
        out = [r for r in live if cp.replica(r)["status"] != "running"]
        out += [r for r in stopped if cp.replica(r)["status"] != "stopped"]
        out += [f"unanswered {kind} {rid}" for _, rid, kind in cp.unanswered()]
        if in_flight(node.nerdctl):
            out.append("nerdctl calls in flight")
        return out

    try:
        wait_for(lambda: not pending() or None, timeout, "the control plane's view to converge")
    except AssertionError:
        left = pending()
        tally.lost += len([p for p in left if "in flight" not in p])
        tally.fail(f"never converged: {left[:10]}")
    for rid in live:
        running = [c for c in node.containers_of(rid) if c.get("status") == "running"]
        if len(running) != 1:
            tally.fail(f"{rid}: {len(running)} running containers, the control plane says running")
    for rid in stopped:
        if node.containers_of(rid):
            tally.fail(f"{rid}: a container is left, the control plane says stopped")


def _check_deliveries(
    tally: Tally, relay: Relay, live: Sequence[str], stopped: Sequence[str]
) -> None:
    """From the control plane's side of the wire: each command answered, never twice per send."""
    sent: Counter[tuple[str, str]] = Counter()
    answered: Counter[tuple[str, str]] = Counter()
    for record in list(relay.records):
        msg = record.parsed()
        payload = msg.get("payload")
        rid = payload.get("replica_id") if isinstance(payload, dict) else None
        if not isinstance(rid, str):
            continue
        kind = msg.get("type")
        if record.direction == "down" and kind in ("deploy", "stop"):
            sent[str(kind), rid] += 1
        elif record.direction == "up" and kind in ("deploy_result", "stop_result"):
            answered[str(kind).removesuffix("_result"), rid] += 1
    for key in [("deploy", r) for r in live] + [("stop", r) for r in stopped]:
        if sent[key] == 0:
            tally.fail(f"{key[0]} {key[1]} never reached the wire")
        elif answered[key] == 0:
            tally.lost += 1
            tally.fail(f"{key[0]} {key[1]}: sent {sent[key]} time(s), never answered")
    for key, n in answered.items():
        if n > sent[key]:
            tally.fail(f"{key[0]} {key[1]}: {n} answers for {sent[key]} sends")
    tally.info["commands re-sent after a reconnect"] += sum(n - 1 for n in sent.values() if n > 1)
    tally.info["agent sessions"] += sum(
        1 for r in relay.records if r.direction == "up" and r.parsed().get("type") == "system_info"
    )


def _check_gpus_free(tally: Tally, cp: ControlPlaneProc, node_id: str, live: Sequence[str]) -> None:
    node = cp.node(node_id)
    held = sum(int(cp.replica(r)["gpu_count"]) for r in live)
    assignable = sum(
        1 for g in node["gpus"] if g.get("driver") == "vfio-pci" and g.get("iommu_group")
    )
    if node["gpus_free"] != assignable - held:
        tally.fail(f"gpus_free {node['gpus_free']}, expected {assignable} - {held}")


# --- agent crashes ----------------------------------------------------------------------------


KILL_POINTS = ("before", "during", "after", "racing")


def agent_crashes(
    root: Path,
    rounds: int,
    seed: int,
    points: Sequence[str] = KILL_POINTS,
    converge_timeout: float = 20.0,
    *,
    only: int | None = None,
) -> Tally:
    """SIGKILL the agent before, during or after the nerdctl call of a deploy or stop.

    ``racing``: during, with the dead agent's call left running and the
    restarted agent's own call for the same replica slower than it.
    """

    def run(tally: Tally) -> None:
        with reaping() as reaper:
            cp = ControlPlaneProc(root / "cp", reaper).start()
            node = AgentNode.build(root / "node", reaper)
            agent = node.agent(cp.url, interval=CP_INTERVAL).start(reaper)
            node_id = online(cp, node)
            saved = node.node_json.read_bytes()
            live: list[str] = []
            stopped: list[str] = []
            secrets: list[str] = []
            delay = 0.0
            for r in round_indexes(rounds, only):
                rng = round_rng(seed, r)
                op = "run" if len(live) < 2 or rng.random() < 0.6 else "stop"
                point = rng.choice(list(points))
                rid = f"ac-{r}" if op == "run" else live[rng.randrange(len(live))]
                if point == "during":
                    node.nerdctl.delay(op, rng.uniform(1.0, 2.5), match=f"replica-{rid}", times=1)
                elif point == "racing":
                    # The same slow call for the restarted agent: the dead agent's
                    # call, left running, finishes first.
                    delay = rng.uniform(2.5, 3.5)
                    node.nerdctl.delay(op, delay, match=f"replica-{rid}", times=2)
                calls_before = len(node.nerdctl.calls())
                if op == "run":
                    secret = secret_value(rng)
                    # The fake reads the env file after its delay, where nerdctl
                    # reads it before the pull; the restarted agent clears the env
                    # dir, so a racing call with env vars would just fail.
                    env = {} if point == "racing" else {"TOKEN": secret}
                    if not _post_replica(tally, cp, rid, rng.choice([0, 1, 1]), env):
                        tally.end_round(r)
                        continue
                    live.append(rid)
                    secrets.append(secret)
                else:
                    if cp.request("DELETE", f"/v1/replicas/{rid}").status_code != 202:
                        tally.fail(f"DELETE {rid} refused")
                    live.remove(rid)
                    stopped.append(rid)
                try:
                    _reach(point, node, op, rid, calls_before, rng)
                except AssertionError as exc:
                    tally.fail(f"{point} {op} {rid}: {exc}")
                agent.kill()
                tally.info[f"killed {point} nerdctl {op}"] += 1
                orphans = in_flight(node.nerdctl)
                # Under systemd (KillMode=control-group) a crashed agent's nerdctl
                # calls die with it; elsewhere they run on.  Both, at random.
                if point != "racing" and rng.random() < 0.5:
                    kill_orphans(node.nerdctl)
                    tally.info["nerdctl calls killed with the agent"] += len(orphans)
                else:
                    _kill_event_streams(node)
                    tally.info["nerdctl calls left running"] += len(orphans)
                agent = node.agent(cp.url, interval=CP_INTERVAL, org_token=None).start(reaper)
                _crash_invariants(tally, cp, node, node_id, saved, live, stopped, converge_timeout)
                if point == "racing" and _raced(node, op, rid, calls_before, delay):
                    tally.info[f"races reached (nerdctl {op})"] += 1
                if not agent.alive():
                    tally.fail(f"the restarted agent exited: {agent.log[-500:]}")
                tally.end_round(r)
            _check_runs(tally, node, Counter({rid: 1 for rid in live + stopped}))
            _check_gpus_free(tally, cp, node_id, live)
            _scan(
                tally,
                [agent.log, cp.log, *cp.responses, *_argvs(node)],
                (ORG_TOKEN, ADMIN_TOKEN, _node_token(node), *secrets),
                "logs, argv or API answers",
            )
            _stop_agent(tally, agent, node)

    return timed(run, Tally("agent SIGKILL and restart", seed))


def _raced(node: AgentNode, op: str, rid: str, since: int, delay: float) -> bool:
    """Whether the restarted agent's call began while the dead agent's still slept."""
    mine = [c for c in node.nerdctl.calls()[since:] if c.op == op and f"replica-{rid}" in c.argv]
    return len(mine) >= 2 and mine[1].start < mine[0].start + delay


def _kill_event_streams(node: AgentNode) -> None:
    """A dead agent's ``nerdctl events`` would die at its next write; end it now."""
    for call in node.nerdctl.calls():
        if call.op == "events" and call.pid in in_flight(node.nerdctl, events=True):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(call.pid, signal.SIGKILL)


def _reach(
    point: str, node: AgentNode, op: str, rid: str, calls_before: int, rng: random.Random
) -> None:
    """Wait for the moment to kill: before, during or just after the nerdctl call."""
    name = f"replica-{rid}"

    def calls() -> list[Any]:
        return [c for c in node.nerdctl.calls()[calls_before:] if c.op == op and name in c.argv]

    if point == "before":
        time.sleep(rng.uniform(0.0, 0.05))
    elif point in ("during", "racing"):
        wait_for(lambda: [c for c in calls() if c.end is None], 15, f"nerdctl {op} to start")
        time.sleep(rng.uniform(0.0, 0.3))
    else:
        wait_for(lambda: [c for c in calls() if c.end is not None], 15, f"nerdctl {op} to end")


def _crash_invariants(
    tally: Tally,
    cp: ControlPlaneProc,
    node: AgentNode,
    node_id: str,
    saved: bytes,
    live: Sequence[str],
    stopped: Sequence[str],
    timeout: float,
) -> None:
    _converge(tally, cp, node, live, stopped, timeout=timeout)
    if node.node_json.read_bytes() != saved:
        tally.fail("node.json changed")
    if node_id_of(node) != node_id:
        tally.fail("node.json no longer names the node")
    leftovers = node.env_files()
    if leftovers:
        tally.fail(f"env files left behind: {leftovers}")
    _check_containers(tally, node)
    reported = set(cp.node(node_id)["replicas"])
    missing = [r for r in live if r not in reported]
    if missing:
        tally.fail(f"replicas not adopted: {missing}")


# --- runtime chaos ----------------------------------------------------------------------------

NERDCTL_FAILURES: tuple[tuple[str, str, str], ...] = (
    # (fixture, phrase the error must keep, what)
    ("nerdctl_run_image_not_found_pull_access_denied_with_progress.txt", "pull access denied", ""),
    ("ctr_run_runtime_not_found_kata_shim_binary_not_installed.txt", "not installed", ""),
    ("nerdctl_run_kata_fc_snapshotter_not_loaded_devmapper.txt", "snapshotter", ""),
    ("nerdctl_run_kata_cgroup_permission_denied_with_pull_progress.txt", "sandbox", ""),
)
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "nerdctl"


def _garbage(rng: random.Random) -> str:
    kinds = [
        lambda: "".join(chr(rng.randrange(1, 0x3000)) for _ in range(rng.randrange(1, 400))),
        lambda: "\x1b[31mERRO\x1b[0m[0000] " + "é" * rng.randrange(1, 5000),
        lambda: "x" * rng.randrange(60_000, 200_000),
        lambda: "\n".join(f"line {i} of nonsense" for i in range(rng.randrange(1, 3000))),
        lambda: 'time="now" level=fatal msg="' + "\\" * rng.randrange(1, 50) + '"',
    ]
    return rng.choice(kinds)()


def runtime_chaos(root: Path, rounds: int, seed: int, *, only: int | None = None) -> Tally:
    """nerdctl that hangs, fails, is slow or prints garbage, for replicas side by side."""

    def run(tally: Tally) -> None:
        with reaping() as reaper:
            peer = WsPeer().start()
            reaper.peers.append(peer)
            node = AgentNode.build(root, reaper)
            agent = node.agent(peer.url, interval=INTERVAL).start(reaper)
            session = register(peer)
            collector = Collector(session).start()
            secrets: list[str] = []
            try:
                for r in round_indexes(rounds, only):
                    rng = round_rng(seed, r)
                    _runtime_round(tally, r, rng, node, session, collector, secrets)
                    if not agent.alive():
                        tally.fail("the agent process died")
                    tally.end_round(r)
                _check_cadence(tally, collector.times(Heartbeat), "under runtime chaos")
            finally:
                collector.stop()
            if node.env_files():
                tally.fail(f"env files left behind: {node.env_files()}")
            _scan(
                tally,
                [agent.log, *_argvs(node), *(str(i.frame) for i in collector.items)],
                (ORG_TOKEN, NODE_TOKEN, *secrets),
                "logs, argv or results",
            )
            _stop_agent(tally, agent, node)

    return timed(run, Tally("runtime chaos", seed))


@dataclass
class _Plan:
    rid: str
    behaviour: str
    delay: float = 0.0
    phrase: str = ""


def _runtime_round(
    tally: Tally,
    r: int,
    rng: random.Random,
    node: AgentNode,
    session: Any,
    collector: Collector,
    secrets: list[str],
) -> None:
    fake = node.nerdctl
    behaviours = ["ok", "slow", "fail", "garbage", "garbage_ok", "hang"]
    plans = [_Plan(f"rc-{r}-hang", "hang")] if rng.random() < 0.7 else []
    while len(plans) < 4:
        plans.append(_Plan(f"rc-{r}-{len(plans)}", rng.choice(behaviours[:-1])))
    for plan in plans:
        match = f"replica-{plan.rid}"
        if plan.behaviour == "slow":
            plan.delay = rng.uniform(0.3, 2.0)
            fake.delay("run", plan.delay, match=match, times=1)
        elif plan.behaviour == "hang":
            fake.delay("run", 3600, match=match, times=1)
        elif plan.behaviour == "fail":
            fixture, plan.phrase, _ = rng.choice(NERDCTL_FAILURES)
            text = (FIXTURES / fixture).read_text()
            fake.fail("run", text, rc=1, match=match, times=1)
        elif plan.behaviour == "garbage":
            fake.fail(
                "run",
                _garbage(rng),
                rc=rng.choice([1, 2, 125, 255]),
                match=match,
                times=1,
                convert=False,
            )
        elif plan.behaviour == "garbage_ok":
            fake.fail("run", _garbage(rng), rc=0, stdout=_garbage(rng), match=match, times=1)
    if rng.random() < 0.5:
        fake.fail("ps", "", rc=0, stdout=_garbage(rng) + "\n", times=1)
    if rng.random() < 0.3:
        fake.delay("stop", rng.uniform(0.5, 1.5), times=1)
    start = len(collector.items)
    sent = time.monotonic()
    for plan in plans:
        secret = secret_value(rng)
        secrets.append(secret)
        session.send_message(
            Deploy(
                DeployPayload(plan.rid, "ghcr.io/acme/llm:1.2", rng.choice([0, 1]), {"K": secret})
            )
        )

    def result(rid: str) -> tuple[float, DeployResult] | None:
        for item in collector.items[start:]:
            if isinstance(item.message, DeployResult) and item.message.payload.replica_id == rid:
                return item.at, item.message
        return None

    others = [p for p in plans if p.behaviour != "hang"]
    try:
        wait_for(
            lambda: all(result(p.rid) for p in others) or None, 30, "the other replicas' results"
        )
    except AssertionError:
        for p in others:
            if result(p.rid) is None:
                tally.lost += 1
                tally.fail(f"{p.behaviour} replica {p.rid}: no result")
    for p in others:
        got = result(p.rid)
        if got is None:
            continue
        at, msg = got
        # Nothing but its own nerdctl call may delay a replica: a hung one next to it must not.
        if at - sent > p.delay + 5.0:
            tally.fail(f"{p.behaviour} replica {p.rid} answered after {at - sent:.1f} s")
        _judge(tally, p, msg, node)
    hung = [p for p in plans if p.behaviour == "hang"]
    for p in hung:
        if result(p.rid) is not None:
            tally.fail(f"hung replica {p.rid} answered while nerdctl hung")
        pids = [
            c.pid
            for c in fake.calls()
            if c.op == "run" and f"replica-{p.rid}" in c.argv and c.end is None
        ]
        for pid in pids:  # the operator (or the run timeout) ends the hung call
            _kill_group(pid)
        try:
            wait_for(partial(result, p.rid), 15, f"a result for {p.rid} once unstuck")
        except AssertionError:
            tally.lost += 1
            tally.fail(f"hung replica {p.rid}: no result after its nerdctl call was killed")
        else:
            got = result(p.rid)
            assert got is not None
            _judge(tally, p, got[1], node)
    stop_start = len(collector.items)
    for p in plans:
        session.send_message(Stop(StopPayload(p.rid)))

    def stopped() -> bool:
        done = {
            i.message.payload.replica_id
            for i in collector.items[stop_start:]
            if isinstance(i.message, StopResult) and i.message.payload.status == "stopped"
        }
        return all(p.rid in done for p in plans)

    try:
        wait_for(lambda: stopped() or None, 30, "stop results")
    except AssertionError:
        tally.fail("not every stop was answered 'stopped'")
    for p in plans:
        if node.containers_of(p.rid):
            tally.fail(f"{p.rid}: container left after stop")


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def _judge(tally: Tally, plan: _Plan, msg: DeployResult, node: AgentNode) -> None:
    status, error = msg.payload.status, msg.payload.error or ""
    running = [c for c in node.containers_of(plan.rid) if c.get("status") == "running"]
    if status is ReplicaStatus.RUNNING:
        if plan.behaviour in ("fail", "garbage", "hang"):
            tally.fail(f"{plan.behaviour} replica {plan.rid} reported running")
        elif not running:
            tally.fail(f"{plan.behaviour} replica {plan.rid} reported running, no container runs")
        return
    if plan.behaviour in ("ok", "slow"):
        tally.fail(f"{plan.behaviour} replica {plan.rid} failed: {error[:200]}")
        return
    if not error.strip() or len(error) > 1000 or "internal error" in error:
        tally.fail(f"{plan.behaviour} replica {plan.rid}: error not useful: {error[:200]!r}")
    if plan.phrase and plan.phrase not in error:
        tally.fail(f"{plan.rid}: error {error[:200]!r} lost nerdctl's reason ({plan.phrase!r})")


# --- storage faults ---------------------------------------------------------------------------


def _can_drop_privileges() -> bool:
    return os.geteuid() != 0 or shutil.which("setpriv") is not None


NO_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner,-chown"]


def _privilege_wrapper() -> list[str]:
    """Run without root's power over file modes (only needed when we are root)."""
    return NO_DAC if os.geteuid() == 0 else []


STORAGE_CASES = (
    "garbage",
    "empty",
    "not_object",
    "missing_field",
    "directory",
    "too_large",
    "other_owner",
    "world_readable",
    "read_only_dir",
    "disk_full_register",
    "disk_full_replace",
)


def storage_faults(root: Path, rounds: int, seed: int, *, only: int | None = None) -> Tally:
    """Broken node.json and broken disks: clear errors, nothing corrupted, nothing retried."""

    def run(tally: Tally) -> None:
        with reaping() as reaper:
            peer = WsPeer().start()
            reaper.peers.append(peer)
            for r in round_indexes(rounds, only):
                case = STORAGE_CASES[r % len(STORAGE_CASES)]
                node = AgentNode.build(root / f"r{r}", reaper)
                try:
                    _storage_case(tally, case, node, peer, reaper, round_rng(seed, r))
                except (AssertionError, subprocess.TimeoutExpired) as exc:
                    tally.fail(f"{case}: {exc}")
                tally.end_round(r)

    return timed(run, Tally("storage faults", seed))


def _valid_config(url: str) -> bytes:
    return (
        b'{\n  "node_id": "node-fz-9",\n  "node_token": "' + NODE_TOKEN.encode() + b'",\n'
        b'  "control_plane_url": "' + url.encode() + b'"\n}\n'
    )


def _storage_case(
    tally: Tally, case: str, node: AgentNode, peer: WsPeer, reaper: Reaper, rng: random.Random
) -> None:
    state = node.state_dir
    state.mkdir(mode=0o700)
    path = node.node_json
    junk = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 300))) + NODE_TOKEN.encode()
    contents = {
        "garbage": junk,
        "empty": b"",
        "not_object": b'["node_id", "' + NODE_TOKEN.encode() + b'"]',
        "missing_field": b'{"node_id": "n", "control_plane_url": "ws://127.0.0.1:1/v1/agent"}',
        "too_large": _valid_config(peer.url)[:-2] + b', "pad": "' + b"x" * 70_000 + b'"}\n',
        "other_owner": _valid_config(peer.url),
        "world_readable": _valid_config(peer.url),
    }
    handshakes = len(peer.handshakes)
    if case in contents:
        path.write_bytes(contents[case])
        path.chmod(0o644 if case == "world_readable" else 0o600)
    elif case == "directory":
        path.mkdir()
    if case == "other_owner":
        if os.geteuid() != 0:
            return  # a file of another user cannot be made without root
        os.chown(path, 65534, 65534)
    before = _snapshot(path)
    if case == "disk_full_replace":
        _disk_full_replace(tally, node, peer.url)
        return
    if case in ("read_only_dir", "disk_full_register"):
        _failed_registration(tally, case, node, peer, reaper)
        return
    wrapper = _privilege_wrapper() if case == "other_owner" else []
    agent = node.agent(peer.url, org_token=ORG_TOKEN, wrapper=wrapper).start(reaper)
    if case == "world_readable":
        session = peer.accept(timeout=20)
        if not isinstance(session.receive_message(timeout=10), SystemInfo):
            tally.fail("world_readable: no system_info with the saved identity")
        if agent.terminate() != 0:
            tally.fail("world_readable: no clean exit")
        if "chmod 600" not in agent.log:
            tally.fail("world_readable: no warning about the file's mode")
    else:
        code = agent.wait(20)
        if code != 1:
            tally.fail(f"{case}: exit status {code}, expected 1")
        if len(peer.handshakes) != handshakes:
            tally.fail(f"{case}: the agent connected (registered over a broken node.json?)")
        _one_clear_error(tally, case, agent.log, "node.json")
    if _snapshot(path) != before:
        tally.fail(f"{case}: node.json was changed")
    if list(state.glob(".node.json.*")):
        tally.fail(f"{case}: temporary file left behind")
    _scan(tally, [agent.log], (NODE_TOKEN, ORG_TOKEN), f"{case}: the log")


def _snapshot(path: Path) -> tuple[bytes, int] | str:
    if path.is_dir():
        return "dir"
    try:
        return path.read_bytes(), path.stat().st_mode
    except OSError:
        return "missing"


def _one_clear_error(tally: Tally, case: str, log: str, needle: str) -> None:
    errors = [line for line in log.splitlines() if "ERROR" in line]
    if "Traceback" in log:
        tally.fail(f"{case}: a traceback instead of an error line")
    if len(errors) != 1 or needle not in errors[0]:
        tally.fail(f"{case}: expected one error line naming {needle}, got {errors[:3]}")


def _failed_registration(
    tally: Tally, case: str, node: AgentNode, peer: WsPeer, reaper: Reaper
) -> None:
    node.env_dir.mkdir(mode=0o700)  # the runtime's own directory is fine; node.json is not
    if case == "read_only_dir":
        node.state_dir.chmod(0o500)
        wrapper = _privilege_wrapper()
    else:
        # Disk full: no file of this process (or its nerdctl calls) may grow past 100 bytes.
        wrapper = ["prlimit", "--fsize=100:100", "--"]
    agent = node.agent(peer.url, org_token=ORG_TOKEN, wrapper=wrapper)
    agent.start(reaper, piped=case == "disk_full_register")
    try:
        session = peer.accept(timeout=20)
        if not isinstance(session.receive_message(timeout=10), Register):
            tally.fail(f"{case}: no register")
        session.send_message(
            RegistrationSuccess(RegistrationSuccessPayload("node-fz-ro", NODE_TOKEN))
        )
        code = agent.wait(20)
    finally:
        node.state_dir.chmod(0o700)
    if code != 1:
        tally.fail(f"{case}: exit status {code}, expected 1")
    if node.node_json.exists():
        tally.fail(f"{case}: node.json exists after a failed save")
    if list(node.state_dir.glob(".node.json.*")):
        tally.fail(f"{case}: temporary file left behind")
    _one_clear_error(tally, case, agent.log, "node.json")
    _scan(tally, [agent.log], (NODE_TOKEN, ORG_TOKEN), f"{case}: the log")


_REPLACE_SCRIPT = """
import resource, sys, anyio
from pathlib import Path
from vectorlay.adapters.filesystem import FileConfigStore
from vectorlay.domain.agent.identity import NodeConfig
from vectorlay.errors import ConfigWriteError
resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100))
store = FileConfigStore(Path(sys.argv[1]))
new = NodeConfig("node-fz-new", "x" * 200, "ws://127.0.0.1:1/v1/agent")
try:
    anyio.run(store.save, new)
except ConfigWriteError as exc:
    print("ConfigWriteError:", exc)
    sys.exit(3)
sys.exit(0)
"""


def _disk_full_replace(tally: Tally, node: AgentNode, url: str) -> None:
    """A save that hits a full disk leaves the previous node.json as it was."""
    old = _valid_config(url)
    node.node_json.write_bytes(old)
    node.node_json.chmod(0o600)
    done = subprocess.run(
        [sys.executable, "-c", _REPLACE_SCRIPT, str(node.state_dir)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if done.returncode != 3 or "node.json" not in done.stdout:
        tally.fail(
            f"disk_full_replace: {done.returncode} {done.stdout[-300:]} {done.stderr[-300:]}"
        )
    if node.node_json.read_bytes() != old:
        tally.fail("disk_full_replace: node.json changed")
    if list(node.state_dir.glob(".node.json.*")):
        tally.fail("disk_full_replace: temporary file left behind")


# --- secrets ------------------------------------------------------------------------------------


def secrets_scan(root: Path, rounds: int, seed: int, *, only: int | None = None) -> Tally:
    """Debug logs, argv, error texts and API answers never hold a token or an env value."""

    def run(tally: Tally) -> None:
        with reaping() as reaper:
            cp = ControlPlaneProc(root / "cp", reaper).start()
            node = AgentNode.build(root / "node", reaper)
            agent = node.agent(cp.url, interval=CP_INTERVAL).start(reaper)
            node_id = online(cp, node)
            secrets: list[str] = []
            for r in round_indexes(rounds, only):
                rng = round_rng(seed, r)
                good, echoed, refused = (secret_value(rng) for _ in range(3))
                if r % 3 == 2:
                    echoed = echoed[:12] + "  two spaces\tand a tab " + echoed[12:]
                secrets += [good, echoed, refused]
                # nerdctl itself quotes the value back in its error, at times
                # after a long message, where an error text gets cut short.
                padding = "x" * 380 if r % 3 == 1 else "failed to create shim task:"
                node.nerdctl.fail(
                    "run",
                    f'FATA[0000] {padding} bad env K2={echoed} "{echoed}"\n',
                    match=f"replica-sc-{r}-b",
                    times=1,
                )
                _post_replica(tally, cp, f"sc-{r}-a", 1, {"K1": good, "K2": echoed})
                _post_replica(tally, cp, f"sc-{r}-b", 0, {"K1": good, "K2": echoed})
                bad = cp.request(
                    "POST",
                    "/v1/replicas",
                    {"image": "busybox", "env_vars": {"K3": refused + "\n"}},
                )
                if bad.status_code != 422:
                    tally.fail(f"an env value with a line break got HTTP {bad.status_code}")
                cp.request("GET", "/v1/replicas", token=None)  # 401
                cp.request("GET", "/v1/replicas", token="wrong-" + ADMIN_TOKEN[:4])

                def settled(a: str = f"sc-{r}-a", b: str = f"sc-{r}-b") -> bool:
                    return bool(
                        cp.replica(a)["status"] == "running" and cp.replica(b)["status"] == "failed"
                    )

                try:
                    wait_for(settled, 20, "the round's replicas to settle")
                except AssertionError as exc:
                    tally.fail(str(exc))
                failed = cp.replica(f"sc-{r}-b")
                if not failed.get("error"):
                    tally.fail("the failed replica has no error text")
                for path in ("/v1/nodes", f"/v1/nodes/{node_id}", "/v1/replicas", "/"):
                    cp.request("GET", path)
                cp.request("DELETE", f"/v1/replicas/sc-{r}-a")
                tally.end_round(r)
            _stop_agent(tally, agent, node)
            if node.env_files():
                tally.fail(f"env files left behind: {node.env_files()}")
            texts = [agent.log, cp.log, *cp.responses, *_argvs(node)]
            _scan(
                tally,
                texts,
                (ORG_TOKEN, ADMIN_TOKEN, _node_token(node), *secrets),
                "debug logs, argv, errors or API answers",
            )
            if tally.secrets:
                tally.fail(f"{tally.secrets} secret hit(s)")
            if "K2" not in agent.log:
                tally.fail("the agent log does not even name the env variables")

    return timed(run, Tally("secrets", seed))


# --- transport security ---------------------------------------------------------------------------

TRANSPORT_CASES = (
    "ws_remote_refused",
    "ws_remote_insecure",
    "wss_self_signed_no_ca",
    "wss_self_signed_with_ca",
    "wss_wrong_ca",
    "wss_insecure_no_ca",
)


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "self.pem", directory / "self.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


def transport_security(root: Path, rounds: int, seed: int, *, only: int | None = None) -> Tally:
    """ws:// only to loopback without --insecure; wss:// trusts only what it is told to."""

    def run(tally: Tally) -> None:
        cert, key = _self_signed(root / "tls")
        (root / "other-ca").mkdir(parents=True, exist_ok=True)
        other = make_certificates(root / "other-ca")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        with reaping() as reaper:
            peer = WsPeer(ssl_context=context).start()
            reaper.peers.append(peer)
            address = _non_loopback_address()
            plain = WsPeer(host=address).start() if address else None
            if plain is not None:
                reaper.peers.append(plain)
            for r in round_indexes(rounds, only):
                case = TRANSPORT_CASES[r % len(TRANSPORT_CASES)]
                node = AgentNode.build(root / f"r{r}", reaper)
                try:
                    _transport_case(tally, case, node, peer, plain, cert, other.ca, reaper)
                except (AssertionError, subprocess.TimeoutExpired) as exc:
                    tally.fail(f"{case}: {exc}")
                tally.end_round(r)

    return timed(run, Tally("transport security", seed))


def _non_loopback_address() -> str | None:
    """This machine's address on its default route, if it has one that is not loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("203.0.113.7", 9))  # UDP: picks a route, sends nothing
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def _logged(proc: Proc, text: str, *, within: float) -> bool:
    """Whether the process's log says ``text`` (any case) within ``within`` seconds.

    A loaded machine can take seconds to start the agent and make its first
    attempt: a fixed short window would blame the agent for the machine.
    """
    try:
        wait_for(lambda: text in proc.log.lower(), within, f"{text!r} in the log")
    except AssertionError:
        return False
    return True


def _transport_case(
    tally: Tally,
    case: str,
    node: AgentNode,
    peer: WsPeer,
    plain: WsPeer | None,
    cert: Path,
    wrong_ca: Path,
    reaper: Reaper,
) -> None:
    # A peer on this machine's own non-loopback address: nothing leaves the
    # machine.  Without one, TEST-NET-3 (never loopback, never answered).
    remote = plain.url if plain is not None else "ws://203.0.113.7:8787/v1/agent"
    if case == "ws_remote_refused":
        agent = node.agent(remote).start(reaper)
        code = agent.wait(15)
        if code != 2 or "--insecure" not in agent.log:
            tally.fail(f"{case}: exit {code}, log {agent.log[-300:]!r}")
        if plain is not None and not plain.no_session(within=0.5):
            tally.fail(f"{case}: a session opened anyway")
    elif case == "ws_remote_insecure":
        agent = node.agent(remote, extra=["--insecure"]).start(reaper)
        if plain is not None:
            session = plain.accept(timeout=20)
            if not isinstance(session.receive_message(timeout=10), Register):
                tally.fail(f"{case}: no register over ws:// with --insecure")
        else:
            time.sleep(2.0)
            if not agent.alive() or "refusing" in agent.log:
                tally.fail(f"{case}: --insecure did not allow ws:// ({agent.log[-300:]!r})")
        if agent.terminate() != 0:
            tally.fail(f"{case}: no clean exit")
    else:
        handshakes = len(peer.handshakes)
        extra = {
            "wss_self_signed_no_ca": [],
            "wss_self_signed_with_ca": ["--ca-file", str(cert)],
            "wss_wrong_ca": ["--ca-file", str(wrong_ca)],
            "wss_insecure_no_ca": ["--insecure"],
        }[case]
        agent = node.agent(peer.url, extra=extra).start(reaper)
        if case == "wss_self_signed_with_ca":
            session = peer.accept(timeout=20)
            if not isinstance(session.receive_message(timeout=10), Register):
                tally.fail(f"{case}: no register over wss://")
        elif not peer.no_session(within=2.5) or len(peer.handshakes) != handshakes:
            tally.fail(f"{case}: a session opened against an untrusted certificate")
        elif not agent.alive():
            tally.fail(f"{case}: the agent exited instead of retrying: {agent.log[-300:]!r}")
        elif not _logged(agent, "certificate", within=20):
            tally.fail(f"{case}: the log does not say the certificate was refused")
        if agent.terminate() != 0:
            tally.fail(f"{case}: no clean exit")
    _scan(tally, [agent.log], (ORG_TOKEN, NODE_TOKEN), f"{case}: the log")


__all__ = [
    "CP_INTERVAL",
    "GOOD_SESSION",
    "RECONNECT_WAIT",
    "STORAGE_CASES",
    "TRANSPORT_CASES",
    "Tally",
    "agent_crashes",
    "control_plane_chaos",
    "round_indexes",
    "round_rng",
    "runtime_chaos",
    "secrets_scan",
    "storage_faults",
    "transport_security",
    "wire_fuzz_inprocess",
    "wire_fuzz_process",
]
