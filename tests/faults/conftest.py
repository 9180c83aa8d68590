"""Sizes of the fault campaigns in the test run.

``VECTORLAY_FAULT_ROUNDS`` (default 3) sets the rounds of each process
scenario, and ten times as many hypothesis examples per backend for the
in-process wire fuzzing; ``VECTORLAY_FAULT_SEED`` (default fixed) picks the
random choices, so a failure can be replayed.  ``benchmarks/faults.py`` runs
the long campaigns.
"""

from __future__ import annotations

import os

import pytest


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


@pytest.fixture
def rounds() -> int:
    return max(1, _env_int("VECTORLAY_FAULT_ROUNDS", 3))


@pytest.fixture
def seed() -> int:
    return _env_int("VECTORLAY_FAULT_SEED", 20261127)
