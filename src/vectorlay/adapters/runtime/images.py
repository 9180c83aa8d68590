"""Images of the engine, for image garbage collection: list them, see which are used, remove one.

``nerdctl images --format '{{json .}}'`` prints one object per image *and
platform* (keys ``CreatedAt, CreatedSince, Digest, ID, Repository, Tag,
Name, Size, BlobSize, Platform``); sizes are go-units text since nerdctl
2.0 (``211.9MB``, decimal) and containerd's binary units before
(``7.0 MiB``).  Which images are used comes from ``ps -a`` over every
container (the ``Image`` field), not only this agent's.  ``rmi`` is never
forced; a conflict (a container uses the image) is an error like any other.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import msgspec

from vectorlay.adapters.commands import run_command
from vectorlay.adapters.runtime.argv import images_argv, ps_all_argv, rmi_argv
from vectorlay.adapters.runtime.stderr import failure
from vectorlay.domain.agent.imagegc import Image, normalize_ref
from vectorlay.errors import ContainerRuntimeError, RuntimeNotInstalled, RuntimeTimeout

if TYPE_CHECKING:
    from vectorlay.ports import ImageRuntime

log = logging.getLogger(__name__)

OUTPUT_LIMIT: Final = 4 * 1024 * 1024
STDERR_TAIL: Final = 16 * 1024
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
_PS_DECODER: Final = msgspec.json.Decoder(_PsImageLine)


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
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = _IMAGE_DECODER.decode(line)
        except msgspec.DecodeError as exc:
            raise ContainerRuntimeError(
                f"nerdctl images printed an unreadable line {number}: {exc}"
            ) from None
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
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = _PS_DECODER.decode(line)
        except msgspec.DecodeError as exc:
            raise ContainerRuntimeError(
                f"nerdctl ps printed an unreadable line {number}: {exc}"
            ) from None
        if item.image:
            used.add(item.image)
            used.add(normalize_ref(item.image))
    return used


def is_in_use(message: str) -> bool:
    return _IN_USE_RE.search(message) is not None


class NerdctlImages:
    """The :class:`~vectorlay.ports.ImageRuntime` port on nerdctl's command line."""

    def __init__(self, *, nerdctl: str = "nerdctl", call_timeout: float = 60.0) -> None:
        self._nerdctl = nerdctl
        self._timeout = call_timeout

    async def images(self) -> Sequence[Image]:
        return parse_images(await self._call(images_argv(self._nerdctl), "images"))

    async def images_in_use(self) -> set[str]:
        return parse_images_in_use(await self._call(ps_all_argv(self._nerdctl), "ps -a"))

    async def remove_image(self, ref: str) -> None:
        await self._call(rmi_argv(self._nerdctl, ref), "rmi")

    async def _call(self, argv: Sequence[str], what: str) -> str:
        result = await run_command(
            argv, timeout=self._timeout, limit=OUTPUT_LIMIT, stderr_tail=STDERR_TAIL
        )
        if result.error is not None:
            raise RuntimeNotInstalled(f"cannot run {self._nerdctl}: {result.error}")
        if result.timed_out:
            raise RuntimeTimeout(f"nerdctl {what} did not finish within {self._timeout:g} s")
        if result.returncode is None:
            raise ContainerRuntimeError(f"nerdctl {what} printed more than {OUTPUT_LIMIT} bytes")
        if result.returncode != 0:
            raise failure(result.returncode, result.stderr.decode("utf-8", "replace"))
        return result.stdout.decode("utf-8", "replace")


if TYPE_CHECKING:
    _: ImageRuntime = NerdctlImages()

__all__ = [
    "NerdctlImages",
    "is_in_use",
    "parse_images",
    "parse_images_in_use",
    "parse_size",
]
