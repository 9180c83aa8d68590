"""Which event loop a command runs on (``--backend``), checked before it starts.

asyncio ships with Python; trio is an optional extra (``vectorlay[trio]``).
Asking for a backend that is not installed is a usage error with one line of
explanation, not a traceback from deep inside anyio.
"""

from __future__ import annotations

import importlib.util


def backend_installed(backend: str) -> bool:
    return backend == "asyncio" or importlib.util.find_spec(backend) is not None


def missing_backend(backend: str, prog: str) -> str | None:
    """The one-line error for a backend that is not installed, else ``None``."""
    if backend_installed(backend):
        return None
    return f"{prog}: error: --backend {backend}: not installed (pip install 'vectorlay[{backend}]')"


__all__ = ["backend_installed", "missing_backend"]
