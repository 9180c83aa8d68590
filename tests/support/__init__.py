"""What unit, integration and fault tests and the benchmarks share, one way to do each thing.

- :mod:`~tests.support.tokens`: the credentials and the secret env value;
- :mod:`~tests.support.net`: a free loopback port;
- :mod:`~tests.support.waits`: polling until a condition holds (blocking and async);
- :mod:`~tests.support.commands`: the command lines and environments of the two programs;
- :mod:`~tests.support.processes`: a started process, the reaper that ends them all;
- :mod:`~tests.support.nodes`: an agent's machine (fake host, fake nerdctl, state dir);
- :mod:`~tests.support.controlplane`: the reference control plane as a process;
- peers, imported from their modules: :mod:`~tests.support.wspeer` (a scripted
  control plane for a real agent) and :mod:`~tests.support.cp_client` (a raw
  agent client and an in-process control plane).
"""

from __future__ import annotations

from tests.support.commands import (
    agent_argv,
    agent_env,
    control_plane_argv,
    control_plane_env,
    vectorlay_argv,
)
from tests.support.controlplane import ControlPlaneProcess, online
from tests.support.net import free_port
from tests.support.nodes import (
    NVIDIA_DRIVER,
    PASSTHROUGH,
    AgentNode,
    FakeHost,
    FakeNerdctl,
    build_fake_host,
    node_id_of,
)
from tests.support.processes import (
    Process,
    Reaper,
    children_cpu,
    in_flight,
    kill_orphans,
    reaping,
)
from tests.support.tokens import ADMIN_TOKEN, NODE_TOKEN, ORG_TOKEN, SECRET
from tests.support.waits import eventually, wait_for

__all__ = [
    "ADMIN_TOKEN",
    "NODE_TOKEN",
    "NVIDIA_DRIVER",
    "ORG_TOKEN",
    "PASSTHROUGH",
    "SECRET",
    "AgentNode",
    "ControlPlaneProcess",
    "FakeHost",
    "FakeNerdctl",
    "Process",
    "Reaper",
    "agent_argv",
    "agent_env",
    "build_fake_host",
    "children_cpu",
    "control_plane_argv",
    "control_plane_env",
    "eventually",
    "free_port",
    "in_flight",
    "kill_orphans",
    "node_id_of",
    "online",
    "reaping",
    "vectorlay_argv",
    "wait_for",
]
