"""The read-only status page (``GET /``): what an operator glances at.

docs/controlplane.md: every node with its status, hold, failing dependencies
and GPUs (``free / assignable / total``, each GPU with its IOMMU group, health
and the replica holding it); the replicas with their status (coloured), node,
GPUs, error or exit code and when they last changed; stopped replicas older
than an hour folded away.  It refreshes itself and reads at 1280 px without
wrapping ids or timestamps.  Every value is HTML-escaped; no secret is on it
(env values never leave the store).
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Final

from vectorlay.domain.fleet.fleet import Fleet
from vectorlay.domain.fleet.records import HOLDS_GPUS, NodeRecord, ReplicaPhase, ReplicaRecord
from vectorlay.domain.hostreport import assignable_slots
from vectorlay.domain.messages import Gpu
from vectorlay.domain.messages import rfc3339 as wire_time

PAGE_REFRESH_SECONDS: Final = 5
# Stopped replicas that last changed longer ago than this fold away.
FOLD_AFTER: Final = timedelta(hours=1)

_STYLE: Final = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222;font-size:14px}
table{border-collapse:collapse;margin-bottom:1.5rem}
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f3f3}
.id,.ts,.num,.pci{white-space:nowrap;font-family:ui-monospace,monospace;font-size:13px}
.num{text-align:right}
.st{white-space:nowrap;font-weight:600}
.online,.running{color:#070}
.offline,.failed{color:#b00}
.degraded,.draining,.maintenance,.pending,.stopping{color:#a60}
.exited,.stopped{color:#666}
.problem{color:#b00}
small,.muted{color:#666}
ul{margin:0;padding-left:1.1rem}
ul.gpus{list-style:none;padding-left:0}
ul.gpus li{white-space:nowrap}
details{margin-bottom:1.5rem}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _ts(stamp: datetime | None) -> str:
    return "-" if stamp is None else _e(wire_time(stamp))


def _gpu_health(gpu: Gpu) -> str:
    """The GPU's health as the node reports it (docs/protocol.md, "GPU passthrough")."""
    return f", health {gpu.health}" if gpu.health else ""


def _node_row(fleet: Fleet, node: NodeRecord, holders: Mapping[str, str]) -> str:
    live = [r for r in fleet.replicas_on(node.node_id) if r.status in HOLDS_GPUS]
    slots = {s.pci_address for s in assignable_slots(node.gpus)}
    gpu_lines = []
    for gpu in node.gpus:
        holder = holders.get(gpu.pci_address)
        problems = list(gpu.problems)
        if gpu.pci_address not in slots and not problems:
            problems = [f"not assignable (driver {gpu.driver or 'none'})"]
        gpu_lines.append(
            f'<li><span class="pci">{_e(gpu.pci_address)}</span> {_e(gpu.model)}'
            f" <small>group {_e(gpu.iommu_group or '-')}{_e(_gpu_health(gpu))}</small>"
            + (f' → <span class="id">{_e(holder)}</span>' if holder else "")
            + "".join(f' <span class="problem">{_e(p)}</span>' for p in problems)
            + "</li>"
        )
    failing = [d for d in node.dependencies if not d.ok]
    deps = (
        "<ul>"
        + "".join(
            f'<li class="problem">{_e(d.name)}: {_e(d.detail or "not ok")}</li>' for d in failing
        )
        + "</ul>"
        if failing
        else '<span class="muted">all ok</span>'
    )
    counts = f"{fleet.gpus_free(node.node_id)} / {len(slots)} / {len(node.gpus)}"
    gpus = f'<span class="num">{counts}</span> <small>free / assignable / total</small>' + (
        '<ul class="gpus">' + "".join(gpu_lines) + "</ul>" if gpu_lines else ""
    )
    held = "<br>".join(f'<span class="id">{_e(r.replica_id)}</span>' for r in live)
    hold = f"<br><small>hold: {_e(node.state.hold.value)}</small>" if node.state.hold else ""
    status = node.status.value
    return (
        "<tr>"
        f'<td><span class="id">{_e(node.node_id)}</span><br>'
        f'<small class="id">{_e(node.hostname)}</small></td>'
        f'<td><span class="st {_e(status)}">{_e(status)}</span>{hold}</td><td>{deps}</td>'
        f"<td>{gpus}</td>"
        f'<td class="ts">{_ts(node.last_seen)}</td><td>{held or "-"}</td>'
        "</tr>"
    )


def _replica_row(replica: ReplicaRecord, changed: datetime | None) -> str:
    status = replica.status.value
    outcome = replica.error or (
        f"exit code {replica.exit_code}" if replica.exit_code is not None else ""
    )
    gpus = ", ".join(replica.gpus) or str(replica.gpu_count)
    return (
        "<tr>"
        f'<td class="id">{_e(replica.replica_id)}</td>'
        f'<td class="st {_e(status)}">{_e(status)}</td>'
        f'<td class="id">{_e(replica.node_id or "-")}</td><td>{_e(replica.image)}</td>'
        f'<td class="pci">{_e(gpus)}</td><td>{_e(outcome)}</td>'
        f'<td class="ts">{_ts(changed)}</td>'
        "</tr>"
    )


_REPLICA_HEAD: Final = (
    "<tr><th>replica</th><th>status</th><th>node</th><th>image</th><th>GPUs</th>"
    "<th>error / exit code</th><th>last change</th></tr>"
)


def _folded(replica: ReplicaRecord, changed: datetime | None, now: datetime) -> bool:
    if replica.status is not ReplicaPhase.STOPPED:
        return False
    # A stop older than this process (no change seen since it started) is old news.
    return changed is None or now - changed > FOLD_AFTER


def render(fleet: Fleet, changed_at: Mapping[str, datetime], now: datetime) -> str:
    """The page's HTML for the fleet as it is now."""
    replicas = fleet.replicas()
    holders: dict[str, str] = {}
    for r in replicas:
        if r.status in HOLDS_GPUS:
            for addr in tuple(r.gpus):
                holders.setdefault(addr, r.replica_id)
    nodes = [_node_row(fleet, n, holders) for n in fleet.nodes()]
    shown: list[str] = []
    folded: list[str] = []
    for r in replicas:
        changed = changed_at.get(r.replica_id)
        (folded if _folded(r, changed, now) else shown).append(_replica_row(r, changed))
    fold = (
        f"<details><summary>{len(folded)} stopped more than an hour ago</summary>"
        f"<table>{_REPLICA_HEAD}{''.join(folded)}</table></details>"
        if folded
        else ""
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{PAGE_REFRESH_SECONDS}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>vectorlay control plane</title><style>{_STYLE}</style></head>
<body><h1>vectorlay control plane</h1>
<p><small>Reference control plane; this page refreshes every {PAGE_REFRESH_SECONDS} s;
as of <span class="ts">{_ts(now)}</span>.</small></p>
<h2>Nodes ({len(nodes)})</h2>
<table><tr><th>node</th><th>status</th><th>failing dependencies</th><th>GPUs</th>
<th>last seen</th><th>replicas</th></tr>
{"".join(nodes) or '<tr><td colspan="6">no nodes yet</td></tr>'}</table>
<h2>Replicas ({len(replicas)})</h2>
<table>{_REPLICA_HEAD}
{"".join(shown) or '<tr><td colspan="7">no replicas yet</td></tr>'}</table>
{fold}
</body></html>
"""


__all__ = ["FOLD_AFTER", "PAGE_REFRESH_SECONDS", "render"]
