"""One machine for an agent: a fake host, a fake nerdctl and a state directory.

The fake host stands in for lspci & co. and /proc and /sys, the stateful
fake nerdctl for the container runtime; :meth:`AgentNode.agent` is the
`vectorlay-agent run` process of that machine.  Container labels and names
are read with the runtime adapter's own constants.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.fakes.host.fakehost import (
    NVIDIA_DRIVER,
    PASSTHROUGH,
    FakeHost,
    Profile,
    build_fake_host,
)
from tests.fakes.nerdctl.fake_nerdctl import Call, Container, FakeNerdctl
from tests.support.commands import agent_argv, agent_env
from tests.support.processes import Process, Reaper
from tests.support.tokens import ORG_TOKEN
from vectorlay.adapters.runtime import GPU_SEPARATOR, LABEL_GPUS, LABEL_REPLICA_ID
from vectorlay.domain.agent.replicas import container_name

__all__ = [
    "NVIDIA_DRIVER",
    "PASSTHROUGH",
    "AgentNode",
    "FakeHost",
    "FakeNerdctl",
    "build_fake_host",
    "node_id_of",
]


@dataclass
class AgentNode:
    root: Path
    host: FakeHost
    nerdctl: FakeNerdctl
    reaper: Reaper

    @classmethod
    def build(cls, root: Path, reaper: Reaper, profile: Profile = PASSTHROUGH) -> AgentNode:
        root.mkdir(parents=True, exist_ok=True)
        fake = FakeNerdctl(root / "nerdctl")
        reaper.fakes.append(fake)
        return cls(root, build_fake_host(root / "host", profile), fake, reaper)

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def node_json(self) -> Path:
        return self.state_dir / "node.json"

    @property
    def env_dir(self) -> Path:
        return self.state_dir / "env"

    def env(self, org_token: str | None = ORG_TOKEN) -> dict[str, str]:
        return agent_env(self.host, self.nerdctl, org_token=org_token)

    def agent(
        self,
        url: str,
        *,
        org_token: str | None = ORG_TOKEN,
        interval: float = 1.0,
        reconnect: float = 0.2,
        stop_timeout: float = 1.0,
        log_level: str = "debug",
        backend: str | None = None,
        extra: Sequence[str] = (),
        wrapper: Sequence[str] = (),
        log_name: str = "agent.log",
    ) -> Process:
        """`vectorlay-agent run` on this machine, not started yet; ``wrapper`` goes
        before its command line (a ``prlimit``, say)."""
        argv = [
            *wrapper,
            *agent_argv(
                url,
                state_dir=self.state_dir,
                nerdctl=self.nerdctl,
                data_path=self.host.data,
                interval=interval,
                reconnect=reconnect,
                stop_timeout=stop_timeout,
                log_level=log_level,
                extra=[*extra, *(["--backend", backend] if backend else [])],
            ),
        ]
        return Process(argv, self.env(org_token), self.root / log_name)

    # --- what the runtime holds -------------------------------------------------------------

    def containers_of(self, rid: str) -> list[Container]:
        return [c for c in self.nerdctl.containers() if _labels(c).get(LABEL_REPLICA_ID) == rid]

    def duplicate_containers(self) -> dict[str, int]:
        """Replica id -> number of containers, where more than one."""
        counts: dict[str, int] = {}
        for c in self.nerdctl.containers():
            rid = _labels(c).get(LABEL_REPLICA_ID)
            if rid is not None:
                counts[rid] = counts.get(rid, 0) + 1
        return {rid: n for rid, n in counts.items() if n > 1}

    def double_assigned_gpus(self) -> dict[str, list[str]]:
        """PCI address -> replica ids, for GPUs named by two running containers' labels."""
        holders: dict[str, list[str]] = {}
        for c in self.nerdctl.containers():
            labels = _labels(c)
            if c.get("status") not in ("running", "paused") or not labels.get(LABEL_GPUS):
                continue
            for addr in labels[LABEL_GPUS].split(GPU_SEPARATOR):
                holders.setdefault(addr, []).append(labels.get(LABEL_REPLICA_ID, "?"))
        return {a: ids for a, ids in holders.items() if len(ids) > 1}

    def env_files(self) -> list[str]:
        if not self.env_dir.is_dir():
            return []
        return sorted(p.name for p in self.env_dir.iterdir())

    def runs(self, rid: str) -> list[Call]:
        """Every `nerdctl run` of the replica's container."""
        return self._calls("run", rid)

    def stops(self, rid: str) -> list[Call]:
        """Every `nerdctl stop` of the replica's container."""
        return self._calls("stop", rid)

    def _calls(self, op: str, rid: str) -> list[Call]:
        name = container_name(rid)
        return [c for c in self.nerdctl.calls() if c.op == op and name in c.argv]


def _labels(container: Container) -> dict[str, str]:
    labels = container.get("labels") or {}
    return {str(k): str(v) for k, v in labels.items()}


def node_id_of(node: AgentNode) -> str | None:
    """The node id the agent saved in its node.json, if it has registered."""
    try:
        value = json.loads(node.node_json.read_text())["node_id"]
    except (OSError, ValueError, KeyError):
        return None
    return str(value)
