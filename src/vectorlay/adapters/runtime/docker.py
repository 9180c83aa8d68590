"""What is Docker's own: its ``ps`` lines, its event lines and its daemon errors.

Read from real captures of the Docker CLI 28.2 (``tests/fixtures/docker/``,
made against Podman's Docker-compatible service; dockerd prints the same
framing):

- ``docker ps -a --format '{{json .}}'`` prints one object per line (nothing
  when none); ``ID``, ``Names`` and ``Labels`` are strings, as nerdctl's.
- ``docker events --format '{{json .}}'`` prints one object per line:
  ``Type`` ``container``, ``Action`` ``start``/``die``/``destroy``/..., the
  container id in ``Actor.ID`` (and ``id``).  Server-side filters are not
  used: through the compatible API ``event=die`` and ``label=key`` match
  nothing.
- Errors are ``docker: ...`` or ``Error response from daemon: ...`` lines,
  followed by ``Run 'docker run --help' ...``; ``rm -f`` of a missing
  container prints one and still exits 0.
"""

from __future__ import annotations

from typing import Final

import msgspec

from vectorlay.adapters.runtime.dialect import Dialect
from vectorlay.adapters.runtime.nerdctl import parse_images, parse_images_in_use
from vectorlay.adapters.runtime.output import PsEntry, parse_ps_lines
from vectorlay.adapters.runtime.stderr import fatal_message

# --- ps ----------------------------------------------------------------------


def parse_ps(text: str) -> list[PsEntry]:
    """``docker ps --format '{{json .}}'``: one JSON object per line."""
    return parse_ps_lines(text, "docker")


# --- events ------------------------------------------------------------------

# Actions after which a managed container may look different ("exec_start: …"
# and the like are processes inside it, not the container).
WATCHED_ACTIONS: Final = frozenset(
    {"start", "die", "destroy", "remove", "oom", "pause", "unpause", "restart"}
)


class _Actor(msgspec.Struct):
    id: str = msgspec.field(default="", name="ID")


class _EventLine(msgspec.Struct):
    type: str = msgspec.field(default="", name="Type")
    action: str = msgspec.field(default="", name="Action")
    id: str = ""
    actor: _Actor | None = msgspec.field(default=None, name="Actor")


_EVENT_DECODER: Final = msgspec.json.Decoder(_EventLine)


def changed_container(line: bytes) -> str | None:
    """The container a ``docker events`` line is about, if it is a change."""
    if not line.strip():
        return None
    try:
        event = _EVENT_DECODER.decode(line)
    except msgspec.DecodeError:
        return None
    if event.type != "container" or event.action not in WATCHED_ACTIONS:
        return None
    return (event.actor.id if event.actor is not None else "") or event.id


# --- errors ------------------------------------------------------------------

_CLI_PREFIX: Final = "docker: "
_DAEMON_PREFIX: Final = "Error response from daemon: "
_ERROR_PREFIX: Final = "Error: "


def _error_lines(stderr: str) -> list[str]:
    found: list[str] = []
    for raw in stderr.splitlines():
        line = raw.strip()
        if line.startswith(_CLI_PREFIX):
            line = line[len(_CLI_PREFIX) :]
        elif not line.startswith((_DAEMON_PREFIX, _ERROR_PREFIX)):
            continue
        line = line.removeprefix(_DAEMON_PREFIX).removeprefix(_ERROR_PREFIX).strip()
        if line:
            found.append(line)
    return found


def error_message(stderr: str) -> str | None:
    """The last error line (without ``docker:``/daemon prefixes), else a logrus error."""
    lines = _error_lines(stderr)
    if lines:
        return lines[-1]
    return fatal_message(stderr)


def is_no_such_container(stderr: str) -> bool:
    lines = _error_lines(stderr)
    return bool(lines) and all(
        "no such container" in line.lower() or "no such object" in line.lower() for line in lines
    )


DIALECT: Final = Dialect(
    name="docker",
    ps_format="{{json .}}",
    events_format="{{json .}}",
    parse_ps=parse_ps,
    changed_container=changed_container,
    error_message=error_message,
    no_such_container=is_no_such_container,
    parse_images=parse_images,
    parse_images_in_use=parse_images_in_use,
)


__all__ = [
    "DIALECT",
    "WATCHED_ACTIONS",
    "changed_container",
    "error_message",
    "is_no_such_container",
    "parse_ps",
]
