"""Each GPU's ``assignable``, ``health`` and ``problems`` (PROTOCOL.md 2.1), from what was read.

Puts together the three verdicts: the passthrough rule
(:mod:`~vectorlay.domain.agent.passthrough`: driver, group viability,
``/dev/vfio/<N>``), host-side health (:mod:`~vectorlay.domain.agent.health`)
and quarantine (:mod:`~vectorlay.domain.agent.quarantine`).  A group is
assigned whole, so a GPU whose group-mate has ``failed`` is not assignable
either: the VM would get the failed GPU too.  Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from vectorlay.domain.agent.health import OK, GpuHealth, Health
from vectorlay.domain.agent.passthrough import IommuGroup, gpu_problems, is_assignable
from vectorlay.domain.agent.quarantine import Quarantine
from vectorlay.domain.messages import Gpu

_RANK = {Health.OK: 0, Health.WARNING: 1, Health.FAILED: 2}


def assess(
    gpus: Sequence[Gpu],
    *,
    groups: Mapping[str, IommuGroup],
    vfio_present: Mapping[str, bool],
    health: Mapping[str, GpuHealth],
) -> list[Gpu]:
    """``gpus`` with the three keys set from the host's readings."""
    out = []
    for gpu in gpus:
        group = groups.get(gpu.iommu_group) if gpu.iommu_group else None
        present = vfio_present.get(gpu.iommu_group or "", False)
        verdict = health.get(gpu.pci_address, OK)
        problems = gpu_problems(
            address=gpu.pci_address,
            driver=gpu.driver,
            group=group,
            vfio_device_present=present,
            health_problems=verdict.problems,
        )
        assignable = is_assignable(
            driver=gpu.driver,
            group=group,
            vfio_device_present=present,
            health_failed=verdict.failed,
        )
        out.append(_with(gpu, assignable, verdict.health, problems))
    return _spoiled_by_failed_mates(out)


def with_quarantine(gpus: Sequence[Gpu], quarantine: Quarantine, now: float) -> list[Gpu]:
    """``gpus`` with what quarantine says of their groups added (the worse health wins)."""
    out = []
    for gpu in gpus:
        verdict = quarantine.health(gpu.iommu_group, now) if gpu.iommu_group else None
        if verdict is None:
            out.append(gpu)
            continue
        health = max(Health(gpu.health), verdict.health, key=_RANK.__getitem__)
        assignable = bool(gpu.assignable) and not verdict.failed
        out.append(_with(gpu, assignable, health, [*gpu.problems, *verdict.problems]))
    return out


def _spoiled_by_failed_mates(gpus: list[Gpu]) -> list[Gpu]:
    failed: dict[str, list[str]] = {}
    for gpu in gpus:
        if gpu.health == Health.FAILED and gpu.iommu_group:
            failed.setdefault(gpu.iommu_group, []).append(gpu.pci_address)
    out = []
    for gpu in gpus:
        mates = [a for a in failed.get(gpu.iommu_group or "", []) if a != gpu.pci_address]
        if not mates:
            out.append(gpu)
            continue
        line = f"IOMMU group {gpu.iommu_group} also holds {', '.join(mates)}, which has failed"
        out.append(_with(gpu, False, Health(gpu.health), [*gpu.problems, line]))
    return out


def _with(gpu: Gpu, assignable: bool, health: Health, problems: Sequence[str]) -> Gpu:
    return Gpu(
        pci_address=gpu.pci_address,
        vendor=gpu.vendor,
        vendor_id=gpu.vendor_id,
        device_id=gpu.device_id,
        model=gpu.model,
        driver=gpu.driver,
        iommu_group=gpu.iommu_group,
        assignable=assignable,
        health=health.value,
        problems=list(problems),
    )


def changed(old: Sequence[Gpu], new: Sequence[Gpu]) -> bool:
    """Whether any GPU's ``assignable`` or ``health`` differs (or the set of GPUs)."""

    def key(gpus: Sequence[Gpu]) -> dict[str, tuple[bool | None, str]]:
        return {g.pci_address: (g.assignable, g.health) for g in gpus}

    return key(old) != key(new)


__all__ = ["assess", "changed", "with_quarantine"]
