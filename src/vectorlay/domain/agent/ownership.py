"""Whose container is it: this agent's, or another agent identity's on the same host.

Containers carry the ``vectorlay.node-id`` label of the node that made them
(docs/runtime.md).  An agent adopts only its own containers, and those
made before the label existed (none); a container of another node identity
(a wiped state directory, a second agent on the host) is never adopted and
never stopped by this agent, and the GPUs it holds are not handed out while
it exists.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import msgspec


class ForeignContainer(msgspec.Struct, frozen=True):
    """A replica container labelled with another node's id."""

    replica_id: str
    node_id: str
    gpus: tuple[str, ...] = ()

    @property
    def problem(self) -> str:
        return (
            f"held by container replica-{self.replica_id} of node {self.node_id} "
            "(another agent identity on this host)"
        )


def is_own(label: str | None, node_id: str | None) -> bool:
    """Whether a container with node-id ``label`` belongs to the agent of ``node_id``.

    Unlabelled (legacy) containers are everyone's; labelled ones belong only
    to their node, so an agent that does not know its id yet (before it
    registers) owns none of them.
    """
    if not label:
        return True
    return node_id is not None and label == node_id


def foreign_gpus(foreign: Iterable[ForeignContainer]) -> dict[str, str]:
    """PCI address -> the problem line of the foreign container holding it."""
    out: dict[str, str] = {}
    for item in sorted(foreign, key=lambda f: f.replica_id):
        for addr in item.gpus:
            out.setdefault(addr, item.problem)
    return out


def foreign_summary(foreign: Mapping[str, ForeignContainer]) -> str:
    """One line naming every foreign container and the GPUs it holds, for the log."""
    return "; ".join(
        f"replica-{f.replica_id} (node {f.node_id}, GPUs {'+'.join(f.gpus) or 'none'})"
        for _, f in sorted(foreign.items())
    )


__all__ = ["ForeignContainer", "foreign_gpus", "foreign_summary", "is_own"]
