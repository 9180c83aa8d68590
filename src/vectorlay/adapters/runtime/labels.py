"""The labels a replica's container carries, written by ``run`` and read back by ``inspect``.

With them the agent rebuilds its replica table and GPU assignments after a
restart.  ``nerdctl ps`` prints all of a container's labels as one
comma-joined string, so no value written here holds a comma.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Final

from vectorlay.domain.agent.replicas import GpuSlot
from vectorlay.domain.validation import PCI_ADDRESS_RE

log = logging.getLogger(__name__)

LABEL_REPLICA_ID: Final = "vectorlay.replica-id"
LABEL_GPUS: Final = "vectorlay.gpus"
# The node whose agent made the container: an agent adopts, stops and counts
# only its own (docs/runtime.md).  It is read back from `inspect` (JSON),
# never from `ps`, so a comma in a node id would do no harm.
LABEL_NODE_ID: Final = "vectorlay.node-id"
# Comma-free on purpose: `nerdctl ps` joins all labels with commas.
GPU_SEPARATOR: Final = "+"


def gpu_label(gpus: Iterable[GpuSlot]) -> str:
    return GPU_SEPARATOR.join(g.pci_address for g in gpus)


def parse_gpu_label(value: str, container_id: str = "") -> tuple[str, ...]:
    parts = [p for p in value.split(GPU_SEPARATOR) if p]
    valid = tuple(p for p in parts if PCI_ADDRESS_RE.fullmatch(p))
    if len(valid) != len(parts):
        log.warning(
            "container %s: %s label holds something other than PCI addresses; kept %d of %d",
            container_id[:12],
            LABEL_GPUS,
            len(valid),
            len(parts),
        )
    return valid


__all__ = [
    "GPU_SEPARATOR",
    "LABEL_GPUS",
    "LABEL_NODE_ID",
    "LABEL_REPLICA_ID",
    "gpu_label",
    "parse_gpu_label",
]
