"""Small files other programs read while the agent rewrites them.

``status.json`` (read by ``vectorlay-agent status``) and the metrics
textfile (read by node_exporter) are replaced with a rename, so a reader
sees the old file or the new one, never half of one.  No fsync: after a
crash a stale or missing file is harmless, and the next write replaces it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_atomic(path: Path, text: str, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``text``; raises ``OSError`` leaving the old file intact."""
    # The temporary name does not end in .prom: node_exporter skips it.
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


__all__ = ["write_atomic"]
