"""A campaign's seed and a round number name that round's choices again.

Round ``r`` of a scenario draws from its own random source, derived from the
seed and ``r`` alone; the hypothesis scenarios generate every round's batch
from one seeded run and execute only the rounds asked for.  Either way a
round run alone (``only=r``, ``benchmarks/faults.py --round r``) gets the
same choices it had in the campaign.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from tests.faults import scenarios
from tests.faults.frames import Frame
from tests.faults.inproc import Outcome
from tests.faults.scenarios import Tally, round_indexes, round_rng, wire_fuzz_inprocess

pytestmark = pytest.mark.faults


def test_a_rounds_choices_depend_on_the_seed_and_its_number_only() -> None:
    campaign = [round_rng(7, r) for r in range(20)]
    drawn = [[rng.random() for _ in range(5)] for rng in campaign]
    again = round_rng(7, 16)
    assert [again.random() for _ in range(5)] == drawn[16]
    assert round_rng(8, 16).random() != drawn[16][0]
    assert len({d[0] for d in drawn}) == 20


def test_only_picks_one_round_by_its_number_from_one() -> None:
    assert list(round_indexes(20)) == list(range(20))
    assert list(round_indexes(20, 17)) == [16]
    for wrong in (0, 21, -1):
        with pytest.raises(ValueError, match="not one of rounds 1 to 20"):
            round_indexes(20, wrong)


def test_a_fuzzed_round_run_alone_gets_the_batch_it_had(monkeypatch: pytest.MonkeyPatch) -> None:
    batches: list[list[Frame]] = []

    def record(frames: Sequence[Frame], backend: str) -> Outcome:
        batches.append(list(frames))
        return Outcome(frames=len(frames))

    monkeypatch.setattr(scenarios, "run_fuzz_session", record)
    campaign = wire_fuzz_inprocess(6, 20261127)
    assert campaign.rounds == 6
    whole = list(batches)
    batches.clear()
    alone = wire_fuzz_inprocess(6, 20261127, only=4)
    assert alone.rounds == 1
    assert batches == [whole[3]]


def test_violations_are_noted_under_the_rounds_own_number() -> None:
    tally = Tally("example", seed=7)
    tally.end_round(15)
    tally.fail("something broke")
    tally.end_round(16)
    assert tally.failed_rounds == [17]
    assert tally.notes == ["round 17: something broke"]
    assert tally.report().startswith("example (seed 7): 2 rounds, 1 failures")
