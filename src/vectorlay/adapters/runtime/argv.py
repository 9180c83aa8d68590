"""Every command line the runtime runs, and the checks before a value reaches one.

How a replica runs (docs/runtime.md has the reasoning)::

    nerdctl run -d --runtime io.containerd.kata.v2 --name replica-<id>
        --label vectorlay.replica-id=<id> --label vectorlay.node-id=<node>
        --label vectorlay.gpus=<pci>+<pci>
        --device /dev/vfio/<iommu group> ... --env-file <0600 file> <image>

Docker and Podman take the same ``run``, ``stop``, ``rm`` and ``inspect``
lines.  Env values never appear here: argv is world-readable in ``/proc``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Final

from vectorlay.adapters.runtime.labels import (
    LABEL_GPUS,
    LABEL_NODE_ID,
    LABEL_REPLICA_ID,
    gpu_label,
)
from vectorlay.domain.agent.replicas import ContainerSpec, GpuSlot
from vectorlay.domain.validation import (
    IOMMU_GROUP_RE,
    PCI_ADDRESS_RE,
    check_image,
    check_replica_id,
)
from vectorlay.errors import ContainerRuntimeError, ValidationError

# containerd identifiers; checked before an id goes on argv, where a leading
# "-" would read as a flag.
CONTAINER_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,75}")


def run_argv(
    nerdctl: str, oci_runtime: str, spec: ContainerSpec, env_file: str | None
) -> list[str]:
    argv = [
        nerdctl,
        "run",
        "-d",
        "--runtime",
        oci_runtime,
        "--name",
        spec.name,
        "--label",
        f"{LABEL_REPLICA_ID}={spec.replica_id}",
    ]
    if spec.node_id:
        argv += ["--label", f"{LABEL_NODE_ID}={spec.node_id}"]
    if spec.gpus:
        argv += ["--label", f"{LABEL_GPUS}={gpu_label(spec.gpus)}"]
    # VFIO hands over whole groups: one device node per group, however many GPUs it holds.
    for device in dict.fromkeys(vfio_device(gpu) for gpu in spec.gpus):
        argv += ["--device", device]
    if env_file is not None:
        argv += ["--env-file", env_file]
    argv.append(spec.image)
    return argv


def ps_argv(nerdctl: str, fmt: str = "{{json .}}") -> list[str]:
    return [
        nerdctl,
        "ps",
        "-a",
        "--no-trunc",
        "--format",
        fmt,
        "--filter",
        f"label={LABEL_REPLICA_ID}",
    ]


def inspect_argv(nerdctl: str, refs: Sequence[str]) -> list[str]:
    # `--type container`: an image whose name looks like a container
    # reference can never answer instead.
    return [nerdctl, "inspect", "--type", "container", *refs]


def stop_argv(nerdctl: str, name: str, grace: float) -> list[str]:
    return [nerdctl, "stop", "-t", str(grace_seconds(grace)), name]


def rm_argv(nerdctl: str, name: str) -> list[str]:
    return [nerdctl, "rm", "-f", name]


def events_argv(nerdctl: str, fmt: str = "{{json .}}") -> list[str]:
    return [nerdctl, "events", "--format", fmt]


def images_argv(nerdctl: str, fmt: str = "{{json .}}") -> list[str]:
    # --format keeps one line per image and platform; the bare table changed
    # shape between versions.
    return [nerdctl, "images", "--format", fmt]


def ps_all_argv(nerdctl: str, fmt: str = "{{json .}}") -> list[str]:
    """Every container of the namespace, this agent's or not, running or not."""
    return [nerdctl, "ps", "-a", "--no-trunc", "--format", fmt]


def rmi_argv(nerdctl: str, ref: str) -> list[str]:
    """Remove one image, never forced: an image a container uses must stay."""
    if not ref or ref.startswith("-") or any(c.isspace() for c in ref):
        raise ContainerRuntimeError(f"not an image reference: {ref[:80]!r}")
    return [nerdctl, "rmi", ref]


def grace_seconds(grace: float) -> int:
    """``nerdctl stop -t`` takes whole seconds; round up so a short grace is not 0."""
    if not math.isfinite(grace) or grace <= 0:
        return 0
    return math.ceil(grace)


def vfio_device(gpu: GpuSlot) -> str:
    return f"/dev/vfio/{gpu.iommu_group}"


def check_spec(spec: ContainerSpec) -> None:
    """Refuse what must never reach nerdctl's argv (the domain checked it already)."""
    try:
        check_replica_id(spec.replica_id, "replica_id")
        check_image(spec.image, "image")
    except ValidationError as exc:
        raise ContainerRuntimeError(str(exc)) from exc
    if not spec.node_id.isprintable():
        # inspect reads labels back as JSON, so only what argv cannot carry is refused.
        raise ContainerRuntimeError("the node id holds unprintable characters")
    for gpu in spec.gpus:
        if not PCI_ADDRESS_RE.fullmatch(gpu.pci_address):
            raise ContainerRuntimeError(f"GPU {gpu.pci_address!r}: not a PCI address")
        if not IOMMU_GROUP_RE.fullmatch(gpu.iommu_group):
            raise ContainerRuntimeError(
                f"GPU {gpu.pci_address}: IOMMU group {gpu.iommu_group!r} is not a number"
            )


def check_replica(replica_id: str) -> None:
    """Refuse a replica id that must never reach argv (as part of its container's name)."""
    try:
        check_replica_id(replica_id, "replica_id")
    except ValidationError as exc:
        raise ContainerRuntimeError(str(exc)) from exc


__all__ = [
    "CONTAINER_ID_RE",
    "check_replica",
    "check_spec",
    "events_argv",
    "grace_seconds",
    "images_argv",
    "inspect_argv",
    "ps_all_argv",
    "ps_argv",
    "rm_argv",
    "rmi_argv",
    "run_argv",
    "stop_argv",
    "vfio_device",
]
