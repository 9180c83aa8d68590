"""Transport security: ws:// to a non-loopback host is refused without --insecure
and works with it; wss:// to a self-signed server fails without --ca-file, with
another CA's file and with --insecure alone, and works with its certificate as
--ca-file.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.faults.scenarios import TRANSPORT_CASES, transport_security

pytestmark = pytest.mark.faults


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is missing")
def test_plain_text_and_untrusted_certificates(tmp_path: Path, seed: int) -> None:
    tally = transport_security(tmp_path, len(TRANSPORT_CASES), seed)
    assert tally.clean, tally.report()
