"""How fast the control plane's view follows a container changed behind the agent's back,
and how soon the agent exits after saying "agent stopped".

    .venv/bin/python benchmarks/replica_truth.py [--times 10] [--backend trio]

Real processes on the fake host (tests/support): a control plane and one
agent (heartbeat interval 5 s, as in the README walkthrough, so a figure
under it shows the immediate heartbeat at work, not the interval).  For
each of ``nerdctl rm -f``, ``nerdctl kill`` and an OOM kill (the fake's
``/tasks/oom`` then exit 137), ``--times`` times: a replica is deployed, its
container is hit, and the clock stops when ``GET /v1/replicas/{id}`` shows
``failed`` with the expected reason (polled every 10 ms).  Then the agent is
sent SIGTERM ``--times`` times (restarted in between): the time from the
signal to the "agent stopped" line, and from that line to the process's exit.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import (  # noqa: E402
    AgentNode,
    ControlPlaneProcess,
    Process,
    online,
    reaping,
    wait_for,
)
from tests.support.nodes import FakeNerdctl  # noqa: E402


def _rm(fake: FakeNerdctl, name: str) -> None:
    fake.cli("rm", "-f", name)


def _kill(fake: FakeNerdctl, name: str) -> None:
    fake.cli("kill", name)


def _oom(fake: FakeNerdctl, name: str) -> None:
    fake.oom(name)


def _shows(cp: ControlPlaneProcess, rid: str, status: str, error: str | None = None) -> bool:
    view = cp.replica(rid)
    return bool(view["status"] == status and (error is None or view["error"] == error))


def _stopped(process: Process) -> bool:
    return "agent stopped" in process.log


ACTIONS = {
    "rm -f": ("container removed outside the agent", _rm),
    "kill": ("container exited with code 137 (killed by SIGKILL)", _kill),
    "oom": ("container exited with code 137 (killed: out of memory)", _oom),
}


def _figures(name: str, values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    return (
        f"{name:<28} n={len(ms):<3} median {statistics.median(ms):7.1f} ms"
        f"  max {ms[-1]:7.1f} ms  min {ms[0]:7.1f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--times", type=int, default=10)
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vectorlay-truth-") as tmp, reaping() as reaper:
        root = Path(tmp)
        cp = ControlPlaneProcess(root, reaper, backend=args.backend).start()
        node = AgentNode.build(root / "n", reaper)
        spec = node.agent(cp.url, interval=5.0, log_level="info", backend=args.backend)
        spec.start(reaper)
        online(cp, node)
        print(f"backend {args.backend}; agent heartbeat interval 5 s")
        for action, (reason, hit) in ACTIONS.items():
            took: list[float] = []
            for _ in range(args.times):
                rid = cp.deploy(image="busybox", gpu_count=1)["replica_id"]
                wait_for(partial(_shows, cp, rid, "running"))
                started = time.monotonic()
                hit(node.nerdctl, f"replica-{rid}")
                try:
                    wait_for(partial(_shows, cp, rid, "failed", reason), 20, action, interval=0.01)
                except AssertionError:
                    print(f"{action}: {rid} never shown failed: {cp.replica(rid)}")
                    print("\n".join(spec.log.splitlines()[-30:]))
                    return 1
                took.append(time.monotonic() - started)
                cp.request("DELETE", f"/v1/replicas/{rid}")
            print(_figures(f"{action} -> shown failed", took))
        to_line: list[float] = []
        to_exit: list[float] = []
        process = spec
        for i in range(args.times):
            assert process.popen is not None
            sent = time.monotonic()
            process.popen.send_signal(signal.SIGTERM)
            wait_for(partial(_stopped, process), 20, "stopped", interval=0.005)
            said = time.monotonic()
            process.popen.wait(20)
            to_line.append(said - sent)
            to_exit.append(time.monotonic() - said)
            process = node.agent(
                cp.url, interval=5.0, log_level="info", backend=args.backend, log_name=f"a{i}.log"
            ).start(reaper)
            online(cp, node)
        print(_figures("SIGTERM -> 'agent stopped'", to_line))
        print(_figures("'agent stopped' -> exit", to_exit))
        node.nerdctl.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
