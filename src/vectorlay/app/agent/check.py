"""``vectorlay-agent check [--json]``: probe this host without connecting anywhere.

Prints the host report as a readable table, or with ``--json`` as one JSON
object: the :class:`~vectorlay.domain.messages.HostReport` encoded by the
same msgspec types the wire uses (the ``system_info`` payload without
``node_id`` and ``replicas``).  Exit status 0 when the host is ready, 1 when
it is degraded; usage errors (2) are the CLI's.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Final

import anyio
import msgspec

from vectorlay.adapters.probe.host import HostProbe
from vectorlay.app.settings import CheckSettings
from vectorlay.domain.agent.replicas import assignable_slots
from vectorlay.domain.messages import Dependency, Gpu, HostReport, Storage

EXIT_READY: Final = 0
EXIT_DEGRADED: Final = 1
PROG: Final = "vectorlay-agent"


def main(settings: CheckSettings) -> int:
    probe = HostProbe(
        data_path=settings.data_path,
        nerdctl=settings.nerdctl,
        image_store=settings.image_store,
        min_free_gb=settings.min_free_gb,
    )
    report = anyio.run(probe.report, backend=settings.backend)
    if settings.json:
        sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    else:
        sys.stdout.write(render(report))
    sys.stdout.flush()
    return EXIT_READY if report.ready else EXIT_DEGRADED


# --- the readable report ----------------------------------------------------------


def render(report: HostReport) -> str:
    """The report as an operator reads it: host, GPUs, dependencies, verdict."""
    hw = report.hardware
    lines = [
        f"{PROG} {report.agent_version} on {hw.hostname}",
        "",
        f"CPU      {hw.cpu_model} ({hw.cpu_cores} logical CPUs)",
        f"Memory   {_figure(hw.ram_gb)} GB",
        f"Storage  {_storage(hw.storage)}",
        "",
        *_gpu_section(hw.gpus, hw.gpu_source),
        "",
        "Dependencies",
        *_table(
            ("NAME", "STATUS", "VERSION", "DETAIL"),
            [_dependency_row(d) for d in report.dependencies],
        ),
        "",
        *_verdict(report.dependencies),
    ]
    return "\n".join(lines) + "\n"


def _gpu_section(gpus: Sequence[Gpu], source: str | None) -> list[str]:
    via = f", found with {source}" if source else ""
    if not gpus:
        return [f"GPUs     none{via}"]
    rows = [
        (g.pci_address, g.vendor, g.model, g.driver or "(none)", g.iommu_group or "-") for g in gpus
    ]
    lines = [
        f"GPUs     {len(gpus)}{via}",
        *_table(("PCI ADDRESS", "VENDOR", "MODEL", "DRIVER", "IOMMU GROUP"), rows),
    ]
    unbound = sum(1 for g in gpus if g.driver is None)
    if unbound:
        lines.append(f"  {unbound} GPU(s) with no driver bound: reported, never assigned")
    slots = len(assignable_slots(gpus))
    lines.append(
        f"  {slots} of {len(gpus)} assignable to replicas (bound to vfio-pci, in an IOMMU group)"
    )
    return lines


def _dependency_row(dep: Dependency) -> tuple[str, ...]:
    return (dep.name, "ok" if dep.ok else "FAIL", dep.version or "-", dep.detail)


def _verdict(dependencies: Sequence[Dependency]) -> list[str]:
    failed = [d for d in dependencies if not d.ok]
    if not failed:
        return ["READY: every dependency is ok"]
    return ["DEGRADED:", *(f"  - {d.name}: {d.detail or 'not ok'}" for d in failed)]


def _storage(storage: Storage) -> str:
    if storage.total_gb is None:
        return f"{storage.path}: not found or not readable"
    return (
        f"{storage.path}: {_figure(storage.total_gb)} GB, {_figure(storage.used_gb)} GB used "
        f"({_figure(storage.usage_percent)}%)"
    )


def _figure(value: float | None) -> str:
    if value is None:
        return "?"
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header))]
    return [
        ("  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True))).rstrip()
        for row in (header, *rows)
    ]


__all__ = ["EXIT_DEGRADED", "EXIT_READY", "main", "render"]
