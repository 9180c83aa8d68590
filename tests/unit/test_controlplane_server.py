"""The control plane's own bookkeeping, without sockets: one session per node, loading a store.

Its parts see it through small Protocols (``SessionHost``, ``AdminHost``) and
never import it; the one node-to-session map changes only through its methods.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import cast

import pytest

import vectorlay
from vectorlay.adapters.memory import ManualClock, MemoryFleetStore
from vectorlay.app.controlplane.server import ControlPlane, ControlPlaneConfig
from vectorlay.app.controlplane.session import AgentSession
from vectorlay.domain.fleet.node import Hold, Node, Status
from vectorlay.domain.fleet.records import CommandKind, FleetChanges, NodeRecord, PendingCommand

APP = Path(vectorlay.__file__).resolve().parent / "app" / "controlplane"


def control_plane(store: MemoryFleetStore | None = None) -> ControlPlane:
    config = ControlPlaneConfig(admin_tokens=("a-1", "a-2"), offline_after=5.0)
    return ControlPlane(store or MemoryFleetStore(), config, ManualClock(100.0))


def session() -> AgentSession:
    # Only identity matters to the bookkeeping.
    return cast(AgentSession, object())


async def test_the_newest_session_owns_the_node() -> None:
    cp = control_plane()
    older, newer = session(), session()
    assert cp.claim_node("n1", older) is None
    assert cp.claim_node("n1", older) is None  # a claim again replaces nothing
    assert cp.claim_node("n1", newer) is older
    assert cp.owns_node("n1", newer)
    assert not cp.owns_node("n1", older)
    assert cp.sessions == {"n1": newer}


async def test_only_the_owner_releases_the_node_and_only_once() -> None:
    cp = control_plane()
    older, newer = session(), session()
    cp.claim_node("n1", older)
    cp.claim_node("n1", newer)
    assert not cp.release_node("n1", older)  # replaced: the node is not its to give up
    assert cp.owns_node("n1", newer)
    assert cp.release_node("n1", newer)
    assert not cp.release_node("n1", newer)
    assert not cp.owns_node("n1", newer)
    assert cp.sessions == {}


async def test_the_admin_api_sees_the_configured_tokens() -> None:
    assert control_plane().admin_tokens == ("a-1", "a-2")


async def test_loading_a_store_puts_every_node_offline_and_keeps_holds() -> None:
    store = MemoryFleetStore()
    await store.add_node(NodeRecord("n1", Node(Status.DRAINING, Hold.DRAIN, True)), "tok-1")
    command = PendingCommand("n1", "r1", CommandKind.STOP, 4)
    await store.save(FleetChanges(commands_put=[command]))
    cp = control_plane(store)
    await cp.load()
    node = cp.fleet.node("n1")
    assert node is not None
    assert node.state == Node(Status.OFFLINE, Hold.DRAIN, True)
    assert cp.fleet.pending_commands("n1") == [command]
    assert cp.fleet.liveness_deadline("n1") == 105.0  # a fresh deadline from the load
    # The load writes what it changed at once.
    assert [n.state for n in (await store.load()).nodes] == [node.state]


@pytest.mark.parametrize("name", ["api", "session"])
def test_the_parts_never_import_the_server(name: str) -> None:
    """No import circle, not even one for typing: each part names what it uses in a Protocol."""
    tree = ast.parse((APP / f"{name}.py").read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            # A relative import stays within the app's packages: count it as one of them.
            base = "vectorlay.app.controlplane." if node.level else ""
            imported.add(base + (node.module or ""))
    assert not {m for m in imported if m.startswith("vectorlay.app.controlplane")}
