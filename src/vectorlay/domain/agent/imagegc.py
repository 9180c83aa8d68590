"""Image garbage collection: when to collect, what may go, in which order, and when to stop.

The anchor is the kubelet's image GC: a high threshold starts a collection,
a low one ends it, least recently used images go first, an image in use
never goes.  Here:

- start when the image store's filesystem is at least 85% used or has under
  50 GB free; stop once it is at most 80% used *and* has 50 GB free, or when
  nothing more may go;
- an image may go when no container uses it (running or stopped, this
  agent's or not), no pending or running replica names it, and no deploy is
  pulling it;
- least recently deployed first, by the agent's own record; images it never
  deployed (or whose record was lost) count as the oldest.

Pure: the caller lists images and containers and reads the disk.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from vectorlay.domain.agent.disk import GB, DiskReading

HIGH_USED: Final = 0.85
LOW_USED: Final = 0.80
MIN_FREE_BYTES: Final = 50 * GB


@dataclass(frozen=True, slots=True)
class Image:
    """One image as the engine lists it: a reference to remove it by, and its size."""

    ref: str  # a normalized name (docker.io/library/nginx:latest), or an id for an untagged one
    image_id: str
    size_bytes: int


def normalize_ref(ref: str) -> str:
    """A reference as engines store it: ``nginx`` is ``docker.io/library/nginx:latest``."""
    name, at, digest = ref.partition("@")
    first, _, rest = name.partition("/")
    if not rest:
        name = f"docker.io/library/{name}"
    elif "." not in first and ":" not in first and first != "localhost":
        name = f"docker.io/{name}"
    if ":" not in name.rsplit("/", 1)[-1] and not at:
        name += ":latest"
    return f"{name}@{digest}" if at else name


def collection_needed(reading: DiskReading) -> bool:
    """At least 85% used or under 50 GB free (unknown figures: no)."""
    if reading.free_bytes is None or reading.total_bytes is None:
        return False
    used = reading.used_fraction
    return reading.free_bytes < MIN_FREE_BYTES or (used is not None and used >= HIGH_USED)


def target_met(total_bytes: int, free_bytes: int) -> bool:
    """At most 80% used and at least 50 GB free."""
    if total_bytes <= 0:
        return True
    return free_bytes >= MIN_FREE_BYTES and (total_bytes - free_bytes) / total_bytes <= LOW_USED


def removable(
    images: Iterable[Image],
    *,
    in_use: Collection[str],
    protected: Collection[str],
    last_deployed: Mapping[str, datetime],
) -> list[Image]:
    """The images that may go, least recently deployed first (never deployed: first of all).

    ``in_use``: references and ids of the images any container uses;
    ``protected``: references of pending or running replicas and of pulls
    under way.  All references are compared normalized.
    """
    blocked = {normalize_ref(r) for r in (*in_use, *protected)} | set(in_use)
    free = [
        i
        for i in images
        if normalize_ref(i.ref) not in blocked
        and i.ref not in blocked
        and i.image_id not in blocked
    ]
    epoch = datetime.min

    def age(image: Image) -> tuple[bool, datetime, str]:
        when = last_deployed.get(normalize_ref(image.ref))
        if when is None:
            return (False, epoch, image.ref)
        return (True, when.replace(tzinfo=None), image.ref)

    return sorted(free, key=age)


def plan(
    reading: DiskReading,
    candidates: Iterable[Image],
) -> list[Image]:
    """The images to remove, in order, if every removal frees its size; empty when not needed."""
    if not collection_needed(reading):
        return []
    assert reading.total_bytes is not None
    assert reading.free_bytes is not None
    free = reading.free_bytes
    chosen: list[Image] = []
    for image in candidates:
        if target_met(reading.total_bytes, free):
            break
        chosen.append(image)
        free += image.size_bytes
    return chosen


__all__ = [
    "HIGH_USED",
    "LOW_USED",
    "MIN_FREE_BYTES",
    "Image",
    "collection_needed",
    "normalize_ref",
    "plan",
    "removable",
    "target_met",
]
