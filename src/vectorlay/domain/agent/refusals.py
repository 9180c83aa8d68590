"""Whether the node takes a deploy now: the reasons it refuses one.

A refusal is answered as a ``failed`` deploy result carrying the reason, and
the runtime is never asked; the replica table applies it
(:meth:`~vectorlay.domain.agent.replicas.ReplicaTable.deploy`).
"""

from __future__ import annotations

from vectorlay.domain.messages import HostReport


def deploy_refusal(*, stopping: bool, report: HostReport) -> str | None:
    """Why a deploy is refused now, or ``None`` when the node takes it.

    ``stopping``: the agent is shutting down; a deploy begun now could be
    cut off half-way, or finish with no session left to report it.
    ``report``: the latest host report; a degraded host cannot run a replica.
    """
    if stopping:
        return "node is draining: the agent is shutting down"
    if not report.ready:
        missing = [d.name for d in report.dependencies if not d.ok]
        return f"node is degraded: dependencies not ready: {', '.join(missing)}"
    return None
