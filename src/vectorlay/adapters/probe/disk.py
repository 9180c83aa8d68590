"""Free space of the image store's filesystem (``statvfs``), for the ``disk`` dependency.

The configured directory may not exist yet (an engine never started, a
fresh host): its nearest existing parent is on the filesystem it will be
created on, so that is what gets measured.
"""

from __future__ import annotations

import os
from pathlib import Path

from vectorlay.domain.agent.disk import DiskReading


def nearest_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (``/`` at worst)."""
    current = path if path.is_absolute() else Path.cwd() / path
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def read_disk(path: Path) -> DiskReading:
    """What ``statvfs`` says of the filesystem holding ``path``; never raises."""
    try:
        measured = nearest_existing(path)
        st = os.statvfs(measured)
    except OSError as exc:
        return DiskReading(str(path), str(path), problem=exc.strerror or type(exc).__name__)
    # f_bavail, not f_bfree: what is left for ordinary writers, as df shows it.
    return DiskReading(
        str(path),
        str(measured),
        total_bytes=st.f_blocks * st.f_frsize,
        free_bytes=st.f_bavail * st.f_frsize,
    )


__all__ = ["nearest_existing", "read_disk"]
