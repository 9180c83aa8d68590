"""In-memory adapters for every port: for tests, yours and ours.

The agent's twins are in :mod:`.agent` (the host's probe, disk and images in
:mod:`.host`), the control plane's store in :mod:`.fleet`; all
are importable from here.
"""

from vectorlay.adapters.memory.agent import (
    Frame,
    ManualClock,
    MemoryConfigStore,
    MemoryConnection,
    MemoryPeer,
    MemoryRuntime,
    MemoryTransport,
)
from vectorlay.adapters.memory.fleet import MemoryFleetStore
from vectorlay.adapters.memory.host import MemoryDisk, MemoryImages, StaticProbe, sample_report

__all__ = [
    "Frame",
    "ManualClock",
    "MemoryConfigStore",
    "MemoryConnection",
    "MemoryDisk",
    "MemoryFleetStore",
    "MemoryImages",
    "MemoryPeer",
    "MemoryRuntime",
    "MemoryTransport",
    "StaticProbe",
    "sample_report",
]
