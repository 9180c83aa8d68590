"""The agent's runtime sync: a container that vanishes while a command changes its
replica is still noticed, and ended and vanished replicas are logged with why."""

from __future__ import annotations

import logging

import anyio
import pytest

from vectorlay.adapters.memory import ManualClock, MemoryRuntime
from vectorlay.app.agent.sync import ConflictLog, ForeignLog, RuntimeSync
from vectorlay.domain.agent.exits import REMOVED_OUTSIDE
from vectorlay.domain.agent.replicas import ContainerState, ReplicaTable, StartContainer
from vectorlay.domain.messages import DeployPayload
from vectorlay.domain.messages import ReplicaStatus as R


def make_sync(runtime: MemoryRuntime, table: ReplicaTable) -> RuntimeSync:
    return RuntimeSync(
        runtime=runtime,
        table=table,
        clock=ManualClock(),
        conflicts=ConflictLog(table, ForeignLog(table)),
        busy=lambda: (),
        changed=lambda: None,
        resync_interval=3600.0,
        retry_delay=1.0,
    )


async def test_a_container_gone_while_its_deploy_finished_is_noticed() -> None:
    runtime = MemoryRuntime()
    table = ReplicaTable(node_id="node-a")
    decision = table.deploy(DeployPayload("r1", "busybox"))
    assert isinstance(decision, StartContainer)
    state = await runtime.run(decision.spec)
    sync = make_sync(runtime, table)
    gate = runtime.gate("list")
    async with anyio.create_task_group() as tg:
        tg.start_soon(sync.refresh)
        with anyio.fail_after(5):
            while ("list", "") not in runtime.calls:
                await anyio.sleep(0.001)
        # While the list is taken: the deploy's outcome lands, and the
        # container is removed by hand (its events spent on this list).
        table.started(state)
        runtime.vanish("r1")
        gate.set()
    replica = table.get("r1")
    assert replica is not None
    assert (replica.status, replica.error) == (R.FAILED, REMOVED_OUTSIDE)
    assert runtime.calls.count(("list", "")) == 2


async def test_ended_and_foreign_containers_are_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="vectorlay.agent")
    runtime = MemoryRuntime()
    runtime.containers["theirs"] = ContainerState(
        "theirs", R.RUNNING, gpus=("0000:17:00.0",), node_id="node-b"
    )
    table = ReplicaTable(node_id="node-a")
    decision = table.deploy(DeployPayload("mine", "busybox"))
    assert isinstance(decision, StartContainer)
    table.started(await runtime.run(decision.spec))
    sync = make_sync(runtime, table)
    await sync.refresh()
    await sync.refresh()
    runtime.set_status("mine", R.FAILED, 137)
    await sync.refresh()
    messages = [r.getMessage() for r in caplog.records]
    foreign = [m for m in messages if "another node identity" in m]
    assert len(foreign) == 1
    assert "replica-theirs (node node-b, GPUs 0000:17:00.0)" in foreign[0]
    assert "replica mine is failed: container exited with code 137 (killed by SIGKILL)" in messages
    del runtime.containers["theirs"]
    await sync.refresh()
    assert any(
        "their GPUs are free again: replica-theirs" in r.getMessage() for r in caplog.records
    )
