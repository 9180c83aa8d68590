"""Fault and abuse campaigns against the agent: the long version of tests/faults.

    .venv/bin/python benchmarks/faults.py [--rounds 20] [--seed N] [--only NAME,...]

Each scenario runs ``--rounds`` rounds (the in-process wire fuzzing runs ten
hypothesis examples per round, on asyncio and on trio) and the script
prints one table: scenario, rounds, failures (rounds in which an invariant
broke), lost results, duplicate containers, double-assigned GPUs, secrets
seen.  Below it: what the abuse consisted of (kills, restarts, re-sent
commands, ...) and the first violations of each scenario.  Exit status 1
when any scenario is not clean.

The scenarios and their invariants are described in docs/faults.md; the
same functions run in the test suite with a few rounds.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.faults import scenarios  # noqa: E402
from tests.faults.scenarios import Tally  # noqa: E402

Runner = Callable[[Path, int, int], Tally]

SCENARIOS: dict[str, Runner] = {
    "wire-fuzz-asyncio": lambda root, n, seed: scenarios.wire_fuzz_inprocess(10 * n, seed),
    "wire-fuzz-trio": lambda root, n, seed: scenarios.wire_fuzz_inprocess(10 * n, seed, "trio"),
    "wire-fuzz-process": scenarios.wire_fuzz_process,
    "control-plane-restarts": scenarios.control_plane_chaos,
    "agent-crashes": lambda root, n, seed: scenarios.agent_crashes(
        root, n, seed, points=("before", "during", "after")
    ),
    # The dead agent's nerdctl call outlives it and wins against the restarted one's.
    "agent-crash-races": lambda root, n, seed: scenarios.agent_crashes(
        root, n, seed, points=("racing",), converge_timeout=10.0
    ),
    "runtime-chaos": scenarios.runtime_chaos,
    "storage-faults": scenarios.storage_faults,
    "secrets": scenarios.secrets_scan,
    "transport-security": scenarios.transport_security,
}
COLUMNS = (
    "scenario",
    "rounds",
    "failures",
    "lost results",
    "duplicate containers",
    "double-assigned GPUs",
    "secrets seen",
    "time",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="rounds per scenario (20)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--only", default="", help=f"comma-separated: {', '.join(SCENARIOS)}")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()] or list(SCENARIOS)
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")

    print(f"command: .venv/bin/python benchmarks/faults.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"seed {seed}; {os.cpu_count()} CPUs; Python {platform.python_version()}; {_commit()}")
    tallies: list[Tally] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vectorlay-faults-") as tmp:
        for name in chosen:
            print(f"... {name}", file=sys.stderr, flush=True)
            tally = SCENARIOS[name](Path(tmp) / name, args.rounds, seed)
            tally.scenario = name
            tallies.append(tally)
    print()
    print(_table(tallies))
    print(f"\ntotal {time.monotonic() - started:.0f} s")
    for tally in tallies:
        if tally.info:
            what = ", ".join(f"{k}: {v}" for k, v in sorted(tally.info.items()))
            print(f"\n{tally.scenario}: {what}")
    for tally in tallies:
        if not tally.clean:
            print(f"\n{tally.report()}")
    return 0 if all(t.clean for t in tallies) else 1


def _table(tallies: list[Tally]) -> str:
    rows = [
        (
            t.scenario,
            str(t.rounds),
            str(t.failures),
            str(t.lost),
            str(t.duplicates),
            str(t.double_gpus),
            str(t.secrets),
            f"{t.seconds:.0f} s",
        )
        for t in tallies
    ]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(COLUMNS)]

    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(COLUMNS), rule, *(line(r) for r in rows)])


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except OSError:
        return "commit unknown"
    return f"commit {out.stdout.strip() or 'unknown'}"


if __name__ == "__main__":
    sys.exit(main())
