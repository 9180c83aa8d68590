"""Quarantine of IOMMU groups whose replicas keep failing to start (PROTOCOL.md 2.1).

3 consecutive starts that fail on a group for a reason other than the image
put its GPUs in ``failed`` ("quarantined after 3 failed starts: <last
error>").  After 10 minutes one more start is allowed: the group is offered
again (health ``warning``, saying so); a success clears the record, a failure
quarantines the group again at once.  Pure: ``now`` (monotonic seconds) is
passed in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from vectorlay.domain.agent.health import GpuHealth, Health

FAILURES: Final = 3
RELEASE_AFTER: Final = 600.0


@dataclass(frozen=True, slots=True)
class _Record:
    failures: int
    last_error: str
    since: float | None  # when the group was quarantined (None: not yet)


class Quarantine:
    def __init__(self, failures: int = FAILURES, release_after: float = RELEASE_AFTER) -> None:
        self.failures = failures
        self.release_after = release_after
        self._groups: dict[str, _Record] = {}

    def start_failed(self, groups: Iterable[str], error: str, now: float) -> None:
        for group in groups:
            old = self._groups.get(group)
            count = (old.failures if old is not None else 0) + 1
            since = now if count >= self.failures else None
            self._groups[group] = _Record(count, error, since)

    def started(self, groups: Iterable[str]) -> None:
        for group in groups:
            self._groups.pop(group, None)

    def health(self, group: str, now: float) -> GpuHealth | None:
        """What quarantine says of ``group``'s GPUs, or ``None`` when nothing."""
        record = self._groups.get(group)
        if record is None or record.since is None:
            return None
        reason = f"quarantined after {record.failures} failed starts: {record.last_error}"
        if now - record.since < self.release_after:
            return GpuHealth(Health.FAILED, (reason,))
        return GpuHealth(
            Health.WARNING,
            (f"{reason}; one more start allowed (a failure quarantines it again)",),
        )


__all__ = ["FAILURES", "RELEASE_AFTER", "Quarantine"]
