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
from vectorlay.app.agent.settings import CheckSettings
from vectorlay.domain.agent.replicas import assignable_slots
from vectorlay.domain.messages import Dependency, Gpu, HostReport, Storage

EXIT_READY: Final = 0
EXIT_DEGRADED: Final = 1
PROG: Final = "vectorlay-agent"


def main(settings: CheckSettings) -> int:
    probe = HostProbe(
        data_path=settings.data_path,
        engine=settings.engine,
        engine_cli=settings.engine_cli,
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
    """One row per GPU, by IOMMU group: a group's GPUs sit together (they are
    assigned together), each GPU's problems on the lines below it."""
    via = f", found with {source}" if source else ""
    if not gpus:
        return [f"GPUs     none{via}"]
    ordered = sorted(gpus, key=_by_group)
    per_group: dict[str, int] = {}
    for g in ordered:
        per_group[g.iommu_group or ""] = per_group.get(g.iommu_group or "", 0) + 1
    header = ("GROUP", "PCI ADDRESS", "MODEL", "DRIVER", "ASSIGNABLE", "HEALTH")
    rows = [
        (g.iommu_group or "-", g.pci_address, g.model, g.driver or "(none)", _yes(g), g.health)
        for g in ordered
    ]
    table = _table(header, rows)
    lines = [f"GPUs     {len(gpus)}{via}", table[0]]
    for row, g in zip(table[1:], ordered, strict=True):
        lines.append(row)
        lines.extend(f"      - {problem}" for problem in g.problems)
    shared = [f"{n} ({count} GPUs)" for n, count in per_group.items() if n and count > 1]
    if shared:
        lines.append(
            f"  IOMMU groups holding several GPUs (assigned together): {', '.join(shared)}"
        )
    unbound = sum(1 for g in gpus if g.driver is None)
    if unbound:
        lines.append(f"  {unbound} GPU(s) with no driver bound: reported, never assigned")
    slots = len(assignable_slots(gpus))
    lines.append(f"  {slots} of {len(gpus)} assignable to replicas")
    return lines


def _by_group(gpu: Gpu) -> tuple[int, str, str]:
    group = gpu.iommu_group or ""
    return (int(group) if group.isdigit() else 1 << 30, group, gpu.pci_address)


def _yes(gpu: Gpu) -> str:
    if gpu.assignable is None:
        return "?"
    return "yes" if gpu.assignable else "no"


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
