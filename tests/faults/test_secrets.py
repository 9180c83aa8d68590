"""Secrets: with debug logging everywhere, the org token, the node token, the admin
token and every env value stay out of every log line, every nerdctl argv,
every error text and every control-plane API answer (status page included),
even when nerdctl quotes a value back in its error, cut short or re-spaced.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.scenarios import secrets_scan

pytestmark = pytest.mark.faults


def test_no_secret_anywhere(tmp_path: Path, rounds: int, seed: int) -> None:
    tally = secrets_scan(tmp_path, rounds, seed)
    assert tally.clean, tally.report()
