"""In-memory adapters for every port: for tests, yours and ours.

The agent's twins are in :mod:`.agent`, the control plane's store in
:mod:`.fleet`; both are importable from here.
"""

from vectorlay.adapters.memory.agent import (
    Frame,
    ManualClock,
    MemoryConfigStore,
    MemoryConnection,
    MemoryDisk,
    MemoryImages,
    MemoryPeer,
    MemoryRuntime,
    MemoryTransport,
    StaticProbe,
    sample_report,
)
from vectorlay.adapters.memory.fleet import MemoryFleetStore

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
