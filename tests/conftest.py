"""Every async test runs on both anyio backends: asyncio and trio.

Whatever a test starts (processes, peers, fake nerdctl calls) goes to the
``reaper`` fixture, which ends it when the test does.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.support.processes import Reaper


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def reaper() -> Iterator[Reaper]:
    # Imported here: a unit test that starts nothing never loads the support package.
    from tests.support.processes import reaping

    with reaping() as started:
        yield started


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: Any) -> None:
    # Mark at collection time, before parametrization, so that the backend
    # parameter combines with a test's own parametrize marks.
    inner = getattr(getattr(obj, "hypothesis", None), "inner_test", obj)
    if (
        isinstance(collector, pytest.Class | pytest.Module)
        and inspect.iscoroutinefunction(inner)
        and collector.istestfunction(obj, name)
    ):
        pytest.mark.anyio(obj)
        pytest.mark.usefixtures("anyio_backend")(obj)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Show how many tests ran on each backend, so both are visible in CI logs."""
    counts: dict[str, int] = {}
    for outcome in ("passed", "failed", "error", "xfailed", "xpassed"):
        for report in terminalreporter.stats.get(outcome, []):
            if getattr(report, "when", "call") != "call":
                continue
            nodeid = getattr(report, "nodeid", "")
            for backend in ("asyncio", "trio"):
                if f"[{backend}" in nodeid or f"-{backend}]" in nodeid or f"-{backend}-" in nodeid:
                    counts[backend] = counts.get(backend, 0) + 1
    if counts:
        terminalreporter.write_line(
            "async tests per backend: "
            + ", ".join(f"{name} {count}" for name, count in sorted(counts.items()))
        )
