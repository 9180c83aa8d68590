"""What is Podman's own: its ``ps`` array, its event lines and its ``Error:`` lines.

Read from real captures (Podman 4.3.1, ``tests/fixtures/podman/``):

- ``podman ps -a --format json`` prints **one JSON array** (``[]`` when
  none), ``'{{json .}}'`` too; ``Names`` is a list, ``Labels`` an object.
- ``podman events --format json`` prints one object per line: ``Type``
  ``container``, ``Status`` ``start``/``died``/``remove``/..., ``ID`` the
  full container id.  ``died`` is the only reliable exit signal (``stop``
  events come and go); it omits ``ContainerExitCode`` for 0.
- Errors end with one ``Error: ...`` line, after any logrus warnings
  (``Failed, retrying in 1s``), and name the missing container at the end
  (``Error: no container with name or ID "x" found: no such container``).
"""

from __future__ import annotations

from typing import Final

import msgspec

from vectorlay.adapters.runtime.dialect import Dialect
from vectorlay.adapters.runtime.output import PsEntry
from vectorlay.adapters.runtime.stderr import fatal_message
from vectorlay.domain.agent.imagegc import Image, normalize_ref
from vectorlay.errors import ContainerRuntimeError

# --- ps ----------------------------------------------------------------------


class _PsItem(msgspec.Struct):
    id: str = msgspec.field(name="Id")
    names: list[str] | None = msgspec.field(default=None, name="Names")
    status: str = msgspec.field(default="", name="Status")


_PS_ARRAY: Final = msgspec.json.Decoder(list[_PsItem])
_PS_LINE: Final = msgspec.json.Decoder(_PsItem)


def parse_ps(text: str) -> list[PsEntry]:
    """``podman ps --format json``: a JSON array (JSON lines are read as well)."""
    body = text.strip()
    if not body:
        return []
    try:
        if body.startswith("["):
            items = _PS_ARRAY.decode(body)
        else:
            items = [_PS_LINE.decode(line) for line in body.splitlines() if line.strip()]
    except msgspec.DecodeError as exc:
        raise ContainerRuntimeError(f"podman ps printed something unreadable: {exc}") from None
    return [PsEntry(item.id, ",".join(item.names or ()), item.status) for item in items]


# --- events ------------------------------------------------------------------

# Statuses after which a managed container may look different.
WATCHED_STATUSES: Final = frozenset({"start", "died", "remove", "pause", "unpause", "restart"})


class _EventLine(msgspec.Struct):
    type: str = msgspec.field(default="", name="Type")
    status: str = msgspec.field(default="", name="Status")
    container_id: str = msgspec.field(default="", name="ID")


_EVENT_DECODER: Final = msgspec.json.Decoder(_EventLine)


def changed_container(line: bytes) -> str | None:
    """The container a ``podman events --format json`` line is about, if it is a change."""
    if not line.strip():
        return None
    try:
        event = _EVENT_DECODER.decode(line)
    except msgspec.DecodeError:
        return None
    if event.type != "container" or event.status not in WATCHED_STATUSES:
        return None
    return event.container_id


# --- errors ------------------------------------------------------------------

_ERROR_PREFIX: Final = "Error: "


def _error_lines(stderr: str) -> list[str]:
    return [
        line.strip()[len(_ERROR_PREFIX) :]
        for line in stderr.splitlines()
        if line.strip().startswith(_ERROR_PREFIX)
    ]


def error_message(stderr: str) -> str | None:
    """The last ``Error: ...`` line (without the prefix), else a logrus error entry."""
    lines = _error_lines(stderr)
    if lines:
        return lines[-1]
    return fatal_message(stderr)


def is_no_such_container(stderr: str) -> bool:
    lines = _error_lines(stderr)
    return bool(lines) and all("no such container" in line.lower() for line in lines)


# --- images --------------------------------------------------------------------
#
# `podman images --format json` (and '{{json .}}') prints one JSON array with
# one entry per image ID *per tag* (an image tagged twice appears twice with
# both `Names`); `Size` is bytes, `Id` the full 64-hex id.  `ps -a` gives each
# container's `Image` name and full `ImageID`.


class _ImageItem(msgspec.Struct):
    id: str = msgspec.field(default="", name="Id")
    names: list[str] | None = msgspec.field(default=None, name="Names")
    size: int = msgspec.field(default=0, name="Size")


class _PsImageItem(msgspec.Struct):
    image: str = msgspec.field(default="", name="Image")
    image_id: str = msgspec.field(default="", name="ImageID")


_IMAGES_ARRAY: Final = msgspec.json.Decoder(list[_ImageItem])
_PS_IMAGES_ARRAY: Final = msgspec.json.Decoder(list[_PsImageItem])


def parse_images(text: str) -> list[Image]:
    """One :class:`Image` per name (an untagged image: by its id)."""
    try:
        items = _IMAGES_ARRAY.decode(text.strip() or "[]")
    except msgspec.DecodeError as exc:
        raise ContainerRuntimeError(f"podman images printed unreadable JSON: {exc}") from None
    found: dict[str, Image] = {}
    for item in items:
        for ref in [normalize_ref(n) for n in item.names or []] or [item.id]:
            if ref:
                found[ref] = Image(ref, item.id, max(item.size, 0))
    return list(found.values())


def parse_images_in_use(text: str) -> set[str]:
    """The image (name and id) of every container ``ps -a`` lists."""
    try:
        items = _PS_IMAGES_ARRAY.decode(text.strip() or "[]")
    except msgspec.DecodeError as exc:
        raise ContainerRuntimeError(f"podman ps printed unreadable JSON: {exc}") from None
    used: set[str] = set()
    for item in items:
        for value in (item.image, normalize_ref(item.image) if item.image else "", item.image_id):
            if value:
                used.add(value)
    return used


DIALECT: Final = Dialect(
    name="podman",
    ps_format="json",
    events_format="json",
    parse_ps=parse_ps,
    changed_container=changed_container,
    error_message=error_message,
    no_such_container=is_no_such_container,
    parse_images=parse_images,
    parse_images_in_use=parse_images_in_use,
)


__all__ = [
    "DIALECT",
    "WATCHED_STATUSES",
    "changed_container",
    "error_message",
    "is_no_such_container",
    "parse_images",
    "parse_images_in_use",
    "parse_ps",
]
