"""GPUs are handed out by whole IOMMU groups: which free groups a deploy takes.

VFIO passes a whole group into the VM that opens ``/dev/vfio/<group>``, so a
replica that asked for one GPU of a two-GPU group would get both, and a
second replica could never open the group.  The unit of assignment is
therefore the group: a deploy for ``count`` GPUs takes free groups (none of
their GPUs held) that together hold exactly ``count`` assignable GPUs.

Best fit, so that big groups stay whole for big deploys: the fewest groups,
then the smallest groups (the sorted sizes compared in order), then the
lowest PCI addresses, so that a choice is always the same for the same host.
Both programs use this rule: the agent's ledger to hand groups out, the
control plane to know which node can take a replica, so the two agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from vectorlay.domain.hostreport import GpuSlot

Groups = Mapping[str, tuple[str, ...]]  # group number -> its assignable GPUs' addresses


def groups_of(slots: Iterable[GpuSlot]) -> dict[str, tuple[str, ...]]:
    """``{group: (addresses...)}`` of assignable GPUs, addresses sorted."""
    out: dict[str, list[str]] = {}
    for slot in slots:
        out.setdefault(slot.iommu_group, []).append(slot.pci_address)
    return {g: tuple(sorted(addrs)) for g, addrs in out.items()}


def free_groups(groups: Groups, held: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """The groups none of whose GPUs is held: a group partly held is held whole."""
    taken = set(held)
    return {g: addrs for g, addrs in groups.items() if not taken.intersection(addrs)}


def choose_groups(free: Groups, count: int) -> list[str] | None:
    """The free groups a deploy for ``count`` GPUs takes, or ``None`` when no set fits exactly.

    A subset sum with the fewest parts: dynamic programming over the exact
    totals 0..count, keeping for each total the best set by the rule above.
    """
    if count <= 0:
        return []
    # Best key per exact total: (number of groups, sorted sizes, sorted first addresses).
    best: dict[int, tuple[int, tuple[int, ...], tuple[str, ...], tuple[str, ...]]] = {
        0: (0, (), (), ())
    }
    ordered = sorted((g for g in free.items() if g[1]), key=lambda g: (len(g[1]), g[1][0]))
    for number, addrs in ordered:
        size = len(addrs)
        for total in sorted(best, reverse=True):
            target = total + size
            if target > count:
                continue
            n, sizes, firsts, names = best[total]
            candidate = (
                n + 1,
                tuple(sorted((*sizes, size))),
                tuple(sorted((*firsts, addrs[0]))),
                (*names, number),
            )
            if target not in best or candidate[:3] < best[target][:3]:
                best[target] = candidate
    found = best.get(count)
    if found is None:
        return None
    return sorted(found[3], key=lambda g: free[g][0])


def refusal(count: int, free: Groups) -> str:
    """Why no set of free groups makes ``count`` GPUs, naming the free group sizes."""
    total = sum(len(a) for a in free.values())
    if count > total:
        return f"not enough free GPUs: {count} requested, {total} free"
    held = ", ".join(str(s) for s in sizes(free)) or "none"
    return (
        f"no free IOMMU groups make exactly {count} GPU{'' if count == 1 else 's'}: "
        f"free groups hold {held}"
    )


def sizes(groups: Groups) -> list[int]:
    """The GPU counts of ``groups``, largest first."""
    return sorted((len(a) for a in groups.values() if a), reverse=True)


__all__ = ["Groups", "choose_groups", "free_groups", "groups_of", "refusal", "sizes"]
