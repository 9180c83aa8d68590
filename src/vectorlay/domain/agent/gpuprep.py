"""What ``prepare-gpus`` would bind to ``vfio-pci``, and why it leaves the rest alone.

A GPU passes into a VM only with its whole IOMMU group, so the unit of a
plan is the group: every non-bridge member that keeps the group from being
viable is bound together with the GPU, or nothing of the group is (never
half a group).  Which members those are, and whether the group is viable
afterwards, is decided by :mod:`vectorlay.domain.agent.passthrough`, the one
rule ``check`` and the agent's reports also use.

A group is left alone (``skip``) when binding it would take something from
the host that the operator did not hand over: a device that drives the
console (``boot_vga`` 1), a device on a host GPU driver (``nvidia``,
``amdgpu``, ``nouveau``), or a storage or network controller that merely
shares the group.  Naming a GPU of the group with ``--gpu`` hands it over.
A GPU with no IOMMU group cannot be passed through at all.

Pure: the caller reads sysfs and passes what it found.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Final

from vectorlay.domain.agent.passthrough import (
    VFIO_PCI,
    GroupMember,
    IommuGroup,
    group_problems,
    is_vfio_driver,
    is_viable,
    members_to_bind,
)

# Drivers a GPU is used through on the host itself: taking a GPU from one of
# them stops whatever runs on it, so only an explicit --gpu does.
HOST_GPU_DRIVERS: Final = frozenset({"nvidia", "amdgpu", "nouveau"})

# PCI base classes of devices the host most likely depends on (01 mass
# storage: maybe its root disk; 02 network: maybe its only uplink).  One that
# merely shares a GPU's group is not bound without --gpu naming that GPU.
HOST_CLASS_NAMES: Final = {"01": "storage controller", "02": "network controller"}

IOMMU_OFF: Final = "IOMMU off: this host has no IOMMU groups"
NO_GROUP: Final = "no IOMMU group: the IOMMU does not cover this device"


class Action(enum.StrEnum):
    BIND = "bind"  # move to vfio-pci
    OK = "ok"  # stays as it is: already on vfio-pci, a bridge, or not holding the group
    SKIP = "skip"  # would need a bind, left alone (reason given)


class SelectionError(ValueError):
    """``--gpu`` named an address that is not a GPU of this host."""


@dataclass(frozen=True, slots=True)
class GpuFacts:
    """A GPU as the probe finds it (address normalized, class four hex digits)."""

    address: str
    class_id: str
    driver: str | None
    iommu_group: str | None


@dataclass(frozen=True, slots=True)
class Step:
    """One device of the plan: what is done to it and why."""

    address: str
    class_id: str | None
    driver: str | None
    group: str | None
    gpu: bool
    action: Action
    reason: str


@dataclass(frozen=True, slots=True)
class GroupPlan:
    """One IOMMU group holding GPUs (``number`` ``None``: a GPU with no group)."""

    number: str | None
    gpus: tuple[str, ...]
    steps: tuple[Step, ...]
    skipped: str | None = None  # why the group is left alone; None when it is not

    @property
    def binds(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.action is Action.BIND)


@dataclass(frozen=True, slots=True)
class Plan:
    iommu_on: bool
    groups: tuple[GroupPlan, ...]

    @property
    def steps(self) -> tuple[Step, ...]:
        return tuple(s for g in self.groups for s in g.steps)

    @property
    def binds(self) -> tuple[Step, ...]:
        return tuple(s for g in self.groups for s in g.binds)

    @property
    def assignable_after(self) -> dict[str, tuple[str, ...]]:
        """``{group: GPUs}`` bound to vfio-pci in a viable group once the binds are done."""
        return {g.number: g.gpus for g in self.groups if g.number is not None and not g.skipped}

    @property
    def skipped_gpus(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.gpu and s.action is Action.SKIP)

    @property
    def nothing_to_do(self) -> bool:
        return self.iommu_on and not self.binds


def make_plan(
    gpus: Sequence[GpuFacts],
    groups: Mapping[str, IommuGroup],
    *,
    iommu_on: bool,
    console: Iterable[str] = (),
    selected: Iterable[str] | None = None,
) -> Plan:
    """The plan for ``gpus`` (every GPU of the host) and the ``groups`` that hold them.

    ``console``: addresses whose ``boot_vga`` is 1.  ``selected``: the
    addresses named with ``--gpu`` (normalized); ``None`` means every GPU.
    Raises :class:`SelectionError` when ``selected`` names a non-GPU.
    """
    named = frozenset(selected) if selected is not None else None
    known = {g.address for g in gpus}
    if named is not None:
        unknown = sorted(named - known)
        if unknown:
            raise SelectionError(f"--gpu {unknown[0]}: not a GPU on this host")
    in_scope = _scope(gpus, named)
    consoles = frozenset(console)
    plans: list[GroupPlan] = []
    by_group: dict[str, list[GpuFacts]] = {}
    for gpu in in_scope:
        if gpu.iommu_group is None:
            plans.append(_ungrouped(gpu, iommu_on))
        else:
            by_group.setdefault(gpu.iommu_group, []).append(gpu)
    for number in sorted(by_group, key=_group_order):
        members = by_group[number]
        plans.append(
            _group_plan(number, groups.get(number), members, consoles, named or frozenset())
        )
    plans.sort(key=lambda p: (p.number is not None, _group_order(p.number or "")))
    return Plan(iommu_on=iommu_on, groups=tuple(plans))


def _scope(gpus: Sequence[GpuFacts], named: frozenset[str] | None) -> list[GpuFacts]:
    """The GPUs of the run: all, or the named ones and every GPU sharing a group with them."""
    if named is None:
        return sorted(gpus, key=lambda g: g.address)
    groups = {g.iommu_group for g in gpus if g.address in named and g.iommu_group is not None}
    return sorted(
        (g for g in gpus if g.address in named or (g.iommu_group in groups)),
        key=lambda g: g.address,
    )


def _ungrouped(gpu: GpuFacts, iommu_on: bool) -> GroupPlan:
    # Nothing to bind can help: without a group the GPU never passes through.
    reason = NO_GROUP if iommu_on else IOMMU_OFF
    step = Step(gpu.address, gpu.class_id, gpu.driver, None, True, Action.SKIP, reason)
    return GroupPlan(None, (gpu.address,), (step,), reason)


def _group_plan(
    number: str,
    group: IommuGroup | None,
    gpus: Sequence[GpuFacts],
    console: frozenset[str],
    named: frozenset[str],
) -> GroupPlan:
    gpu_addresses = tuple(g.address for g in gpus)
    if group is None:
        # The GPU's iommu_group link names a group sysfs does not list: its
        # members are unknown, so binding could leave half a group behind.
        unlisted = f"IOMMU group {number} is not listed under kernel/iommu_groups"
        steps = tuple(
            Step(g.address, g.class_id, g.driver, number, True, Action.SKIP, unlisted) for g in gpus
        )
        return GroupPlan(number, gpu_addresses, steps, unlisted)
    to_bind = {m.address for m in members_to_bind(group, gpu_addresses)}
    reason = _skip_reason(group, to_bind, gpu_addresses, console, named)
    steps = tuple(
        _member_step(m, number, m.address in gpu_addresses, m.address in to_bind, reason)
        for m in group.members
    )
    return GroupPlan(number, gpu_addresses, steps, reason)


def _skip_reason(
    group: IommuGroup,
    to_bind: set[str],
    gpus: Sequence[str],
    console: frozenset[str],
    named: frozenset[str],
) -> str | None:
    """Why the group must be left alone, ``None`` when its binds may go ahead."""
    handed_over = any(g in named for g in gpus)
    for member in group.members:
        if member.address not in to_bind:
            continue
        own = member.address in named
        # Only a GPU can be named with --gpu: another device in these
        # situations keeps its group on the host.
        hint = "; name it with --gpu to take it" if member.address in gpus else ""
        if member.address in console and not own:
            return f"{member.address} drives the console (boot_vga 1){hint}"
        if member.driver in HOST_GPU_DRIVERS and not own:
            return f"{member.address} is on the host driver {member.driver}{hint}"
        kind = HOST_CLASS_NAMES.get((member.class_id or "")[:2])
        if kind and member.address not in gpus and not handed_over:
            return (
                f"{member.address} ({kind}, on {member.driver}) shares the group and would be "
                "taken from the host; name the GPU with --gpu to bind it anyway"
            )
    after = IommuGroup(
        group.number,
        tuple(replace(m, driver=VFIO_PCI) if m.address in to_bind else m for m in group.members),
    )
    if not is_viable(after):
        problems = group_problems(after)
        return f"{problems[0]} even after binding (VFIO leaves bridges on the host)"
    return None


def _member_step(
    member: GroupMember, number: str, gpu: bool, bind: bool, skipped: str | None
) -> Step:
    driver = member.driver
    shown = driver or "no driver"
    if bind:
        action, reason = Action.BIND, f"{shown} -> {VFIO_PCI}"
        if skipped is not None:
            action, reason = Action.SKIP, skipped
    elif member.is_bridge:
        action, reason = Action.OK, f"bridge, stays on {shown}"
    elif is_vfio_driver(driver):
        action, reason = Action.OK, f"on {driver}"
    else:
        action, reason = Action.OK, f"{shown}: does not hold the group"
    return Step(member.address, member.class_id, driver, number, gpu, action, reason)


def _group_order(number: str) -> tuple[int, str]:
    return (len(number), number)


def exit_code(plan: Plan) -> int:
    """0 nothing to do, 1 binds needed or no IOMMU groups at all (DESIGN §5)."""
    return 0 if plan.nothing_to_do else 1


def kernel_parameters(cpu_vendor: str | None) -> str:
    """The kernel command line that turns the IOMMU on, for the CPU vendor of cpuinfo."""
    if cpu_vendor == "AuthenticAMD":
        return "amd_iommu=on iommu=pt"
    if cpu_vendor == "GenuineIntel":
        return "intel_iommu=on iommu=pt"
    return "intel_iommu=on iommu=pt (Intel) or amd_iommu=on iommu=pt (AMD)"


__all__ = [
    "HOST_GPU_DRIVERS",
    "IOMMU_OFF",
    "NO_GROUP",
    "Action",
    "GpuFacts",
    "GroupPlan",
    "Plan",
    "SelectionError",
    "Step",
    "exit_code",
    "kernel_parameters",
    "make_plan",
]
