"""Every async test runs on both anyio backends: asyncio and trio."""

from __future__ import annotations

import inspect
from typing import Any

import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


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
