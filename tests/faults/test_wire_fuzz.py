"""Fuzzing the wire: every inbound frame gets what it is owed, and nothing else.

In-process (hypothesis, with shrinking) for breadth; the real agent process
over a real WebSocket for a smaller sample.  Invariants: the session and
the process survive, every deploy/stop with a readable ``replica_id`` gets
exactly one result and every other unreadable frame one ``error``, no
invalid deploy reaches the runtime, no GPU is held twice, no env value
shows up in a result, an error or a log record, heartbeats keep their
cadence.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from tests.faults.frames import MAX_FRAME, Frame, batches
from tests.faults.inproc import run_fuzz_session
from tests.faults.scenarios import wire_fuzz_process

pytestmark = pytest.mark.faults

EXAMPLES = 10 * max(1, int(os.environ.get("VECTORLAY_FAULT_ROUNDS", "") or 3))


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(frames=batches)
def test_a_live_session_survives_any_inbound_frames(backend: str, frames: list[Frame]) -> None:
    outcome = run_fuzz_session(frames, backend)
    assert outcome.violations == []


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_limit_is_counted_in_utf8_bytes(backend: str) -> None:
    # 1 MiB of UTF-8 exactly is read; one byte more is too large, though it
    # is far fewer characters than bytes.
    def padded(size: int) -> str:
        payload = {"replica_id": "pad-1", "image": "busybox", "p": ""}
        room = size - len(json.dumps({"type": "deploy", "payload": payload}).encode())
        payload["p"] = "€" * (room // 3) + "x" * (room % 3)
        return json.dumps({"type": "deploy", "payload": payload}, ensure_ascii=False)

    outcome = run_fuzz_session([padded(MAX_FRAME), padded(MAX_FRAME + 1)], backend)
    assert outcome.violations == []


def test_a_result_for_a_huge_replica_id_fits_in_a_frame() -> None:
    rid = "r" * (MAX_FRAME - 100)
    frame = json.dumps({"type": "deploy", "payload": {"replica_id": rid, "image": "busybox"}})
    assert len(frame.encode()) <= MAX_FRAME
    outcome = run_fuzz_session([frame], "asyncio", wait=2.0)
    assert outcome.violations == []


def test_the_agent_process_survives_fuzzing(tmp_path: Path, rounds: int, seed: int) -> None:
    tally = wire_fuzz_process(tmp_path, rounds, seed)
    assert tally.clean, tally.report()
