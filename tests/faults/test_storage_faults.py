"""Storage faults: node.json garbage, empty, the wrong shape, a directory, too large,
another user's, readable by others; the state directory read-only; the disk full
(a file size limit) while node.json is written.

Invariants: one clear error line naming the file and no traceback, exit
status 1, no registration over a file that exists, the file unchanged, no
temporary file left, a warning (and a normal start) for a file others can
read, and never the token in the log.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.faults.scenarios import STORAGE_CASES, storage_faults

pytestmark = pytest.mark.faults


@pytest.mark.skipif(
    os.geteuid() == 0 and shutil.which("setpriv") is None,
    reason="as root, file modes only bind without CAP_DAC_OVERRIDE (setpriv is missing)",
)
@pytest.mark.skipif(shutil.which("prlimit") is None, reason="prlimit is missing")
def test_broken_node_json_and_broken_disks(tmp_path: Path, seed: int) -> None:
    tally = storage_faults(tmp_path, len(STORAGE_CASES), seed)
    assert tally.clean, tally.report()
