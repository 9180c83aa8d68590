"""What is nerdctl's own: its default OCI runtime, its ``ps`` lines and its events.

The command lines (:mod:`~vectorlay.adapters.runtime.argv`), the ``inspect``
objects (:mod:`~vectorlay.adapters.runtime.output`) and the env file are
shared with the engines that copy nerdctl's command line (Docker, Podman);
what differs between engines lives in one module like this one.

Importing this module is cheap (no process or async machinery): the
settings read :data:`DEFAULT_OCI_RUNTIME` from here.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Final

import msgspec

from vectorlay.adapters.runtime.dialect import Dialect
from vectorlay.adapters.runtime.engines import KATA_SHIM
from vectorlay.adapters.runtime.output import PsEntry, json_lines, parse_ps_lines
from vectorlay.adapters.runtime.stderr import fatal_message, is_no_such_container
from vectorlay.domain.agent.imagegc import Image, normalize_ref

# Kata's containerd shim: one micro-VM per container.
DEFAULT_OCI_RUNTIME: Final = KATA_SHIM


# --- ps ----------------------------------------------------------------------


_STATUS_WORDS_RE: Final = re.compile(r"[A-Za-z]+(?: \(-?[0-9]+\))?")


def parse_ps(text: str) -> list[PsEntry]:
    """``nerdctl ps --format '{{json .}}'``: one JSON object per line."""
    return parse_ps_lines(text, "nerdctl")


def ps_status_key(status: str) -> str:
    """``Exited (1) 3 seconds ago`` -> ``Exited (1)``: the part that is state, not age."""
    match = _STATUS_WORDS_RE.match(status.strip())
    return match.group(0) if match else status.strip()


# --- events ------------------------------------------------------------------

# containerd topics after which a managed container may look different.
WATCHED_TOPICS: Final = frozenset(
    {
        "/tasks/start",
        "/tasks/exit",
        "/tasks/delete",
        "/tasks/oom",
        "/tasks/paused",
        "/tasks/resumed",
        "/containers/delete",
    }
)


class _EventLine(msgspec.Struct):
    topic: str = msgspec.field(default="", name="Topic")
    # Present since nerdctl 1.7 (2024); older versions carry it in Event only.
    container_id: str = msgspec.field(default="", name="ID")
    event: str = msgspec.field(default="", name="Event")


class _EventPayload(msgspec.Struct):
    container_id: str = ""
    id: str = ""


_EVENT_DECODER: Final = msgspec.json.Decoder(_EventLine)
_PAYLOAD_DECODER: Final = msgspec.json.Decoder(_EventPayload)


@dataclass(frozen=True, slots=True)
class ContainerEvent:
    topic: str
    container_id: str
    # The process the event is about: the container's own id for its main
    # task, an exec id for a process started inside it.
    process_id: str


def parse_event(line: bytes | str) -> ContainerEvent | None:
    """One line of ``nerdctl events --format '{{json .}}'``, ``None`` if not an event."""
    if not line.strip():
        return None
    try:
        outer = _EVENT_DECODER.decode(line)
    except msgspec.DecodeError:
        return None
    payload = _EventPayload()
    if outer.event:
        with contextlib.suppress(msgspec.DecodeError):
            payload = _PAYLOAD_DECODER.decode(outer.event)
    if outer.topic.startswith("/containers/"):
        # Container events name the container in "id"; there is no process.
        cid = outer.container_id or payload.container_id or payload.id
        return ContainerEvent(outer.topic, cid, "")
    cid = outer.container_id or payload.container_id
    return ContainerEvent(outer.topic, cid, payload.id)


def oom_container(line: bytes) -> str | None:
    """The container an events line reports an out-of-memory kill for, or ``None``.

    nerdctl's ``inspect`` has no ``OOMKilled`` (2.2.1 prints ``false``
    always): containerd's ``/tasks/oom`` event is the only word of it.  It
    may come before or after the container's ``/tasks/exit``.
    """
    event = parse_event(line)
    if event is None or event.topic != "/tasks/oom" or not event.container_id:
        return None
    return event.container_id


def changed_container(line: bytes) -> str | None:
    """The container an events line says may look different now ("" if unnamed), or ``None``.

    ``None`` for what is no change of a container: another topic, or a
    process exec'd inside the container rather than the container itself.
    """
    event = parse_event(line)
    if event is None or event.topic not in WATCHED_TOPICS:
        return None
    if event.process_id and event.container_id and event.process_id != event.container_id:
        return None
    return event.container_id


# --- images --------------------------------------------------------------------
#
# `nerdctl images --format '{{json .}}'` prints one object per image *and
# platform* (keys CreatedAt, CreatedSince, Digest, ID, Repository, Tag, Name,
# Size, BlobSize, Platform); sizes are go-units text since nerdctl 2.0
# (`211.9MB`, decimal) and containerd's binary units before (`7.0 MiB`).

_NONE: Final = "<none>"
_SIZE_RE: Final = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*")
_UNITS: Final = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "pb": 1000**5,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
    "pib": 1024**5,
}
# What nerdctl (and dockerd/podman) say when a container still uses the image.
_IN_USE_RE: Final = re.compile(
    r"conflict: unable to|is being used by|\(must force\)|is in use|image used by", re.IGNORECASE
)


class _ImageLine(msgspec.Struct):
    id: str = msgspec.field(default="", name="ID")
    repository: str = msgspec.field(default="", name="Repository")
    tag: str = msgspec.field(default="", name="Tag")
    name: str = msgspec.field(default="", name="Name")
    size: str | int = msgspec.field(default="", name="Size")


class _PsImageLine(msgspec.Struct):
    id: str = msgspec.field(default="", name="ID")
    image: str = msgspec.field(default="", name="Image")


_IMAGE_DECODER: Final = msgspec.json.Decoder(_ImageLine)
_PS_IMAGE_DECODER: Final = msgspec.json.Decoder(_PsImageLine)


def parse_size(text: str | int) -> int | None:
    """Bytes of ``211.9MB`` (go-units), ``7.0 MiB`` (binary), ``0.0 B`` or an int; else ``None``."""
    if isinstance(text, int):
        return text if text >= 0 else None
    match = _SIZE_RE.fullmatch(text)
    if match is None:
        return None
    factor = _UNITS.get(match.group(2).lower())
    if factor is None:
        return None
    return round(float(match.group(1)) * factor)


def parse_images(text: str) -> list[Image]:
    """One :class:`Image` per reference; a multi-platform image counts its largest platform."""
    found: dict[str, Image] = {}
    for item in json_lines(text, _IMAGE_DECODER, "nerdctl images"):
        ref = _reference(item)
        if not ref:
            continue
        size = parse_size(item.size) or 0
        known = found.get(ref)
        if known is None or size > known.size_bytes:
            found[ref] = Image(ref, item.id, size)
    return list(found.values())


def _reference(item: _ImageLine) -> str:
    """The name to remove the image by: its full name, else repository:tag, else its id."""
    if item.name and _NONE not in item.name:
        return normalize_ref(item.name)
    if item.repository and item.repository != _NONE:
        tag = item.tag if item.tag and item.tag != _NONE else "latest"
        return normalize_ref(f"{item.repository}:{tag}")
    return item.id


def parse_images_in_use(text: str) -> set[str]:
    """The image of every container ``ps -a`` lists, normalized."""
    used: set[str] = set()
    for item in json_lines(text, _PS_IMAGE_DECODER, "nerdctl ps"):
        if item.image:
            used.add(item.image)
            used.add(normalize_ref(item.image))
    return used


def is_in_use(message: str) -> bool:
    return _IN_USE_RE.search(message) is not None


DIALECT: Final = Dialect(
    name="nerdctl",
    ps_format="{{json .}}",
    events_format="{{json .}}",
    parse_ps=parse_ps,
    changed_container=changed_container,
    oom_container=oom_container,
    error_message=fatal_message,
    no_such_container=is_no_such_container,
    parse_images=parse_images,
    parse_images_in_use=parse_images_in_use,
)


__all__ = [
    "DEFAULT_OCI_RUNTIME",
    "DIALECT",
    "WATCHED_TOPICS",
    "ContainerEvent",
    "changed_container",
    "is_in_use",
    "oom_container",
    "parse_event",
    "parse_images",
    "parse_images_in_use",
    "parse_ps",
    "parse_size",
    "ps_status_key",
]
