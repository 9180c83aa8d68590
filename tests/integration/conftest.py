"""Fixtures the integration tests share: a scripted control-plane peer and a fake node."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import AgentNode, Reaper
from tests.support.wspeer import WsPeer


@pytest.fixture
def peer() -> Iterator[WsPeer]:
    """A scripted control plane on a loopback port, closed after the test."""
    with WsPeer() as server:
        yield server


@pytest.fixture
def node(tmp_path: Path, reaper: Reaper) -> AgentNode:
    """A fake GPU host with its fake nerdctl, its processes reaped after the test."""
    return AgentNode.build(tmp_path, reaper)
