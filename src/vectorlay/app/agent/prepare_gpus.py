"""``vectorlay-agent prepare-gpus [--apply] [--persist] [--json] [--gpu ADDR ...]``.

Makes a node's GPUs passthrough-ready: each GPU and every member of its
IOMMU group on ``vfio-pci`` (docs/runtime.md, "Binding GPUs").  Without
``--apply`` it prints the plan and changes nothing; ``--apply`` checks the
preconditions (IOMMU groups present, vfio-pci loaded) and runs the binds
(:mod:`.gpubind`); ``--persist`` installs the boot-time unit
(:mod:`.gpu_unit`).  The plan itself is :mod:`vectorlay.domain.agent.gpuprep`.

Exit status: 0 nothing to do or every bind done (skipped GPUs do not count),
1 binds needed (plan), a bind that did not take, vfio-pci not loadable or no
IOMMU groups at all, 2 usage error (``--gpu`` naming no GPU of this host).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TextIO

import anyio
import msgspec

from vectorlay.adapters.probe.binding import SysfsFileWriter, cpu_vendor, read_pci_state
from vectorlay.adapters.probe.host import host_root
from vectorlay.adapters.probe.procfs import read_text
from vectorlay.app.agent.gpu_unit import Persisted, Runner, persist
from vectorlay.app.agent.gpubind import (
    ModuleLoader,
    Outcome,
    apply_plan,
    ensure_loaded,
    failed,
    modprobe,
)
from vectorlay.app.agent.settings import PrepareGpusSettings
from vectorlay.domain.agent.gpuprep import (
    GroupPlan,
    Plan,
    SelectionError,
    exit_code,
    kernel_parameters,
    make_plan,
)
from vectorlay.ports import SysfsWriter

PROG: Final = "vectorlay-agent prepare-gpus"
EXIT_OK: Final = 0
EXIT_NOT_DONE: Final = 1
EXIT_USAGE: Final = 2


@dataclass(frozen=True, slots=True)
class Result:
    """Everything one run found and did, for the table and for ``--json``."""

    plan: Plan
    applied: bool
    outcomes: tuple[Outcome, ...] = ()
    now: dict[str, tuple[str, ...]] | None = None  # after --apply: assignable as sysfs shows it
    problem: str | None = None
    kernel: str | None = None  # kernel parameters to set when IOMMU is off
    persisted: Persisted | None = None
    code: int = EXIT_OK


def main(
    settings: PrepareGpusSettings,
    *,
    env: Mapping[str, str] | None = None,
    sysfs: SysfsWriter | None = None,
    load_module: ModuleLoader | None = None,
    run: Runner | None = None,
    out: TextIO | None = None,
) -> int:
    environ = os.environ if env is None else env
    sys_root = host_root(environ, "HOST_SYS", "/sys")
    proc_root = host_root(environ, "HOST_PROC", "/proc")

    async def go() -> int:
        return await prepare(
            settings,
            sys_root=sys_root,
            proc_root=proc_root,
            sysfs=sysfs or SysfsFileWriter(sys_root),
            load_module=load_module or modprobe,
            run=run,
            out=out or sys.stdout,
        )

    return anyio.run(go, backend=settings.backend)


async def prepare(
    settings: PrepareGpusSettings,
    *,
    sys_root: Path,
    proc_root: Path,
    sysfs: SysfsWriter,
    load_module: ModuleLoader,
    run: Runner | None = None,
    out: TextIO,
) -> int:
    try:
        plan = _plan(sys_root, settings.gpus)
    except SelectionError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    kernel = None
    if not plan.iommu_on:
        kernel = kernel_parameters(cpu_vendor(read_text(proc_root / "cpuinfo") or ""))
    result = Result(plan, settings.apply, kernel=kernel, code=exit_code(plan))
    if settings.apply:
        result = await _apply(result, settings, sys_root, sysfs, load_module)
    if settings.persist:
        persisted = await persist(settings.gpus, root=settings.root, run=run)
        code = result.code if not persisted.problems else EXIT_NOT_DONE
        result = _replace(result, persisted=persisted, code=code)
    out.write(_json(result) + "\n" if settings.json else render(result))
    out.flush()
    return result.code


def _plan(sys_root: Path, gpus: Sequence[str]) -> Plan:
    state = read_pci_state(sys_root)
    return make_plan(
        state.gpus,
        state.groups,
        iommu_on=state.iommu_on,
        console=state.console,
        selected=gpus or None,
    )


async def _apply(
    result: Result,
    settings: PrepareGpusSettings,
    sys_root: Path,
    sysfs: SysfsWriter,
    load_module: ModuleLoader,
) -> Result:
    plan = result.plan
    if not plan.iommu_on:
        return _replace(result, problem="no IOMMU groups: nothing can be bound", code=1)
    outcomes: list[Outcome] = []
    problem = None
    if plan.binds:
        problem = await ensure_loaded(sysfs, load_module)
        if problem is None:
            outcomes = apply_plan(plan, sysfs, where=str(sys_root))
    try:
        after = _plan(sys_root, settings.gpus)
        now = {n: g.gpus for n, g in _ready_groups(after)}
    except SelectionError:  # a named GPU vanished from sysfs meanwhile
        now = {}
    code = EXIT_NOT_DONE if problem is not None or failed(outcomes) else EXIT_OK
    return _replace(result, outcomes=tuple(outcomes), now=now, problem=problem, code=code)


def _ready_groups(plan: Plan) -> list[tuple[str, GroupPlan]]:
    """Groups whose GPUs are assignable as the plan's sysfs shows them: nothing left to bind."""
    return [
        (g.number, g) for g in plan.groups if g.number is not None and not g.skipped and not g.binds
    ]


def _replace(result: Result, **changes: Any) -> Result:
    fields = {name: getattr(result, name) for name in Result.__slots__}
    fields.update(changes)
    return Result(**fields)


# --- output ----------------------------------------------------------------------


def render(result: Result) -> str:
    plan = result.plan
    lines = [
        "Applied this plan (results below)"
        if result.applied
        else "Plan (nothing is changed; --apply binds, as root)",
        "",
    ]
    if plan.steps:
        lines += _table(
            ("GROUP", "PCI ADDRESS", "KIND", "CLASS", "DRIVER", "ACTION", "REASON"),
            [
                (
                    s.group or "-",
                    s.address,
                    "GPU" if s.gpu else "",
                    s.class_id or "?",
                    s.driver or "(none)",
                    s.action.value,
                    s.reason,
                )
                for s in plan.steps
            ],
        )
    else:
        lines.append("No GPUs found")
    if result.kernel is not None:
        lines += [
            "",
            "IOMMU is off: this host has no IOMMU groups, so no GPU can be passed through.",
            f"  Add `{result.kernel}` to the kernel command line (GRUB_CMDLINE_LINUX in",
            "  /etc/default/grub, then update-grub or grub2-mkconfig), enable VT-d/AMD-Vi in",
            "  the firmware, reboot, and run this again.",
        ]
    if result.outcomes:
        lines += [
            "",
            *_table(
                ("PCI ADDRESS", "GROUP", "RESULT", "DRIVER NOW", "DETAIL"),
                [
                    (
                        o.address,
                        o.group or "-",
                        "ok" if o.ok else "FAILED",
                        o.driver or "(none)",
                        o.detail,
                    )
                    for o in result.outcomes
                ],
            ),
        ]
    if result.problem:
        lines += ["", f"ERROR: {result.problem}"]
    lines += ["", *_verdict(result)]
    if result.persisted is not None:
        lines += ["", *_persist_lines(result.persisted)]
    return "\n".join(lines) + "\n"


def _verdict(result: Result) -> list[str]:
    plan = result.plan
    groups = result.now if result.now is not None else plan.assignable_after
    when = "Now" if result.now is not None else "Afterwards"
    count = sum(len(g) for g in groups.values())
    lines = [f"{when}: {count} GPU(s) assignable (on vfio-pci, IOMMU group viable)"]
    lines += [f"  group {n}: {', '.join(gpus)}" for n, gpus in groups.items()]
    for step in plan.skipped_gpus:
        lines.append(f"  skipped {step.address}: {step.reason}")
    if not result.applied and plan.binds:
        lines.append(f"{len(plan.binds)} device(s) to bind: run `{PROG} --apply` as root")
    elif not result.applied and plan.iommu_on:
        lines.append("Nothing to bind.")
    elif result.applied and failed(result.outcomes):
        lines.append(
            f"{len(failed(result.outcomes))} device(s) not on vfio-pci: see DETAIL above "
            "(a device that did not bind was given back to its host driver)"
        )
    elif result.applied and result.code == EXIT_OK:
        done = sum(1 for o in result.outcomes if o.detail.startswith("bound"))
        lines.append(f"{done} device(s) bound." if done else "Nothing to bind.")
    return lines


def _persist_lines(persisted: Persisted) -> list[str]:
    verb = "Ran" if persisted.ran else "To run"
    lines = [f"Installed {persisted.path}", f"{verb}:"]
    lines += [f"  {c}" for c in persisted.commands]
    lines += [f"  FAILED: {p}" for p in persisted.problems]
    return lines


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header))]
    return [
        ("  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True))).rstrip()
        for row in (header, *rows)
    ]


def as_dict(result: Result) -> dict[str, Any]:
    plan = result.plan
    data: dict[str, Any] = {
        "mode": "apply" if result.applied else "plan",
        "iommu": plan.iommu_on,
        "kernel_parameters": result.kernel,
        "devices": [
            {
                "address": s.address,
                "iommu_group": s.group,
                "gpu": s.gpu,
                "class": s.class_id,
                "driver": s.driver,
                "action": s.action.value,
                "reason": s.reason,
            }
            for s in plan.steps
        ],
        "binds": len(plan.binds),
        "assignable_after": {n: list(g) for n, g in plan.assignable_after.items()},
        "skipped": [{"address": s.address, "reason": s.reason} for s in plan.skipped_gpus],
        "problem": result.problem,
        "exit": result.code,
    }
    if result.applied:
        data["results"] = [
            {
                "address": o.address,
                "iommu_group": o.group,
                "ok": o.ok,
                "driver": o.driver,
                "detail": o.detail,
            }
            for o in result.outcomes
        ]
        data["assignable_now"] = {n: list(g) for n, g in (result.now or {}).items()}
    if result.persisted is not None:
        data["persist"] = {
            "unit": str(result.persisted.path),
            "commands": list(result.persisted.commands),
            "ran": result.persisted.ran,
            "problems": list(result.persisted.problems),
        }
    return data


def _json(result: Result) -> str:
    return msgspec.json.encode(as_dict(result)).decode()


__all__ = [
    "EXIT_NOT_DONE",
    "EXIT_OK",
    "EXIT_USAGE",
    "Result",
    "as_dict",
    "main",
    "prepare",
    "render",
]
