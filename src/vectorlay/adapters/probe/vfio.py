"""Is VFIO available: the kernel modules Kata needs to pass GPUs through.

Required: ``vfio``, ``vfio_pci`` and ``vfio_iommu_type1``.  A module counts
as present when ``$HOST_PROC/modules`` lists it or, failing that, when
``$HOST_SYS/module/<name>`` exists: Ubuntu builds ``vfio_pci`` into the
kernel, and built-in modules never appear in ``/proc/modules`` (a kernel
without module support has no such file at all).  Kernels >= 6.2 also show
``vfio_pci_core`` and ``iommufd``; they are fine and not required by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from vectorlay.adapters.probe.procfs import parse_modules, read_text
from vectorlay.adapters.probe.sysfs import module_present
from vectorlay.domain.messages import Dependency

REQUIRED_MODULES: Final = ("vfio", "vfio_pci", "vfio_iommu_type1")
NAME: Final = "vfio"


def missing_modules(proc_root: Path, sys_root: Path) -> list[str]:
    text = read_text(proc_root / "modules")
    loaded = parse_modules(text) if text is not None else set()
    return [
        name
        for name in REQUIRED_MODULES
        if name not in loaded and not module_present(sys_root, name)
    ]


def check_vfio(proc_root: Path, sys_root: Path) -> Dependency:
    missing = missing_modules(proc_root, sys_root)
    if missing:
        return Dependency(
            name=NAME, ok=False, version=None, detail=f"missing modules: {', '.join(missing)}"
        )
    return Dependency(name=NAME, ok=True, version=None, detail="")


__all__ = ["NAME", "REQUIRED_MODULES", "check_vfio", "missing_modules"]
