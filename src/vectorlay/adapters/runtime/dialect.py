"""What one container engine does its own way, as the runtime adapter needs it.

Everything else -- the ``run``/``stop``/``rm``/``inspect`` command lines, the
env file, labels, GPU devices, adoption, timeouts and exit detection -- is
the same code for every engine (:mod:`.runtime`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vectorlay.adapters.runtime.output import PsEntry

if TYPE_CHECKING:
    from vectorlay.domain.agent.imagegc import Image


def _no_oom_events(_line: bytes) -> str | None:
    return None


@dataclass(frozen=True, slots=True)
class Dialect:
    """One engine's ``ps``/``images``/``events`` formats and how to read them and its errors."""

    # The engine's name, as the settings spell it and as messages call it.
    name: str
    # `ps --format` (`images --format` takes the same) and `events --format` values.
    ps_format: str
    events_format: str
    # `ps` output -> the containers it lists.
    parse_ps: Callable[[str], list[PsEntry]]
    # One events line -> the container that may look different now ("" if
    # unnamed), or None when the line is no change of a container.
    changed_container: Callable[[bytes], str | None]
    # stderr -> the raw text of the error the engine reported, or None.
    error_message: Callable[[str], str | None]
    # stderr -> whether every container asked about does not exist.
    no_such_container: Callable[[str], bool]
    # `images` output -> one Image per reference; `ps -a` output -> the
    # images its containers use (for image garbage collection).
    parse_images: Callable[[str], list[Image]]
    parse_images_in_use: Callable[[str], set[str]]
    # One events line -> the container it reports an out-of-memory kill of,
    # for engines whose inspect does not say so.
    oom_container: Callable[[bytes], str | None] = _no_oom_events


__all__ = ["Dialect"]
