"""When each image was last deployed on this node: ``<state-dir>/images.json``.

Image garbage collection removes the least recently deployed images first.
The record is the agent's own (an engine's "created" date says when the
image was built, not when it was last wanted).  Written atomically; a
missing or unreadable record is an empty one (every image then counts as
never deployed, the oldest), never a crash.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from vectorlay.adapters.textfiles import write_atomic

log = logging.getLogger(__name__)

RECORD_FILE_NAME: Final = "images.json"
RECORD_FORMAT: Final = 1


class FileDeployRecord:
    """Image reference -> last deploy time, kept in a JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._last: dict[str, datetime] | None = None

    def last_deployed(self) -> Mapping[str, datetime]:
        if self._last is None:
            self._last = self._load()
        return dict(self._last)

    def deployed(self, ref: str, when: datetime) -> None:
        last = dict(self.last_deployed())
        last[ref] = when
        self._last = last
        self._save()

    def forget(self, refs: list[str]) -> None:
        last = dict(self.last_deployed())
        if any(last.pop(ref, None) is not None for ref in list(refs)):
            self._last = last
            self._save()

    def _load(self) -> dict[str, datetime]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning(
                "%s cannot be read (%s): every image counts as never deployed",
                self.path,
                type(exc).__name__,
            )
            return {}
        entries = data.get("last_deployed") if isinstance(data, dict) else None
        if not isinstance(entries, dict):
            log.warning(
                "%s is not an image record: every image counts as never deployed", self.path
            )
            return {}
        out: dict[str, datetime] = {}
        for ref, stamp in entries.items():
            try:
                when = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
            except ValueError:
                continue  # that one image counts as never deployed
            out[str(ref)] = when if when.tzinfo else when.replace(tzinfo=UTC)
        return out

    def _save(self) -> None:
        entries = {
            ref: when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
            for ref, when in sorted((self._last or {}).items())
        }
        text = json.dumps({"format": RECORD_FORMAT, "last_deployed": entries}, indent=1) + "\n"
        try:
            write_atomic(self.path, text, mode=0o600)
        except OSError as exc:
            log.warning("cannot write %s: %s", self.path, exc.strerror or type(exc).__name__)


__all__ = ["RECORD_FILE_NAME", "FileDeployRecord"]
