"""Fault and abuse campaigns against the agent: the long version of tests/faults.

    .venv/bin/python benchmarks/faults.py [--rounds 20] [--seed N] [--only NAME,...] [--round R]

Each scenario runs ``--rounds`` rounds (the in-process wire fuzzing runs ten
hypothesis examples per round, on asyncio and on trio, and counts examples
as its rounds) and the script prints one table: scenario, rounds, failures
(rounds in which an invariant broke), lost results, duplicate containers,
double-assigned GPUs, secrets seen.  Below it: what the abuse consisted of
(kills, restarts, re-sent commands, ...) and the first violations of each
scenario, each scenario that was not clean with the command that replays
it.  Exit status 1 when any scenario is not clean.

The seed (random unless ``--seed``) is printed first.  Round ``R`` of a
scenario draws its choices from the seed and ``R`` alone, so
``--seed N --rounds K --only NAME`` replays a scenario's choices and adding
``--round R`` runs round ``R`` by itself (see docs/faults.md, "Replaying a
failure").

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
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.faults import scenarios  # noqa: E402
from tests.faults.scenarios import Tally, round_indexes  # noqa: E402
from tests.faults.truth import behind_the_back  # noqa: E402

# (where to work, rounds, seed, the one round to run or None) -> what happened
Runner = Callable[[Path, int, int, int | None], Tally]
EXAMPLES_PER_ROUND = 10  # hypothesis examples per round of the in-process fuzzing

SCENARIOS: dict[str, Runner] = {
    "wire-fuzz-asyncio": lambda root, n, seed, only: scenarios.wire_fuzz_inprocess(
        EXAMPLES_PER_ROUND * n, seed, only=only
    ),
    "wire-fuzz-trio": lambda root, n, seed, only: scenarios.wire_fuzz_inprocess(
        EXAMPLES_PER_ROUND * n, seed, "trio", only=only
    ),
    "wire-fuzz-process": lambda root, n, seed, only: scenarios.wire_fuzz_process(
        root, n, seed, only=only
    ),
    "control-plane-restarts": lambda root, n, seed, only: scenarios.control_plane_chaos(
        root, n, seed, only=only
    ),
    "agent-crashes": lambda root, n, seed, only: scenarios.agent_crashes(
        root, n, seed, points=("before", "during", "after"), only=only
    ),
    # The dead agent's nerdctl call outlives it and wins against the restarted one's.
    "agent-crash-races": lambda root, n, seed, only: scenarios.agent_crashes(
        root, n, seed, points=("racing",), converge_timeout=10.0, only=only
    ),
    "runtime-chaos": lambda root, n, seed, only: scenarios.runtime_chaos(root, n, seed, only=only),
    "storage-faults": lambda root, n, seed, only: scenarios.storage_faults(
        root, n, seed, only=only
    ),
    "secrets": lambda root, n, seed, only: scenarios.secrets_scan(root, n, seed, only=only),
    "behind-the-back": lambda root, n, seed, only: behind_the_back(root, n, seed, only=only),
    "transport-security": lambda root, n, seed, only: scenarios.transport_security(
        root, n, seed, only=only
    ),
}
IN_PROCESS = frozenset({"wire-fuzz-asyncio", "wire-fuzz-trio"})
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
SHOWN_ROUNDS = 3  # failing rounds given a command of their own, per scenario


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="rounds per scenario (20)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--only", default="", help=f"comma-separated: {', '.join(SCENARIOS)}")
    parser.add_argument(
        "--round",
        type=int,
        default=None,
        metavar="R",
        help="run round R alone (from 1; an example number for the in-process fuzzing), "
        "with the choices it has among --rounds rounds of --seed; needs one --only scenario",
    )
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()] or list(SCENARIOS)
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")
    if args.round is not None:
        if len(chosen) != 1:
            parser.error("--round needs exactly one scenario in --only")
        try:
            round_indexes(_units(chosen[0], args.rounds), args.round)
        except ValueError as exc:
            parser.error(f"--round: {exc}")

    print(f"command: .venv/bin/python benchmarks/faults.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"seed {seed}; {os.cpu_count()} CPUs; Python {platform.python_version()}; {_commit()}")
    named = chosen if args.only.strip() else []
    print(f"replay: {_replay(seed, args.rounds, named, args.round)}", flush=True)
    tallies: list[Tally] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vectorlay-faults-") as tmp:
        for name in chosen:
            print(f"... {name} (seed {seed})", file=sys.stderr, flush=True)
            tally = _run(name, Path(tmp) / name, args.rounds, seed, args.round)
            tallies.append(tally)
            if not tally.clean:
                print(
                    f"... {name} not clean; replay: {_replay(seed, args.rounds, [name])}",
                    file=sys.stderr,
                    flush=True,
                )
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
            print(_replays(tally, seed, args.rounds))
    if not all(t.clean for t in tallies):
        print(f"\nseed {seed}")
        return 1
    return 0


def _run(name: str, root: Path, rounds: int, seed: int, only: int | None) -> Tally:
    """One scenario; one that raises counts as not clean instead of ending the campaign."""
    started = time.monotonic()
    try:
        tally = SCENARIOS[name](root, rounds, seed, only)
    except Exception as exc:
        traceback.print_exc()
        tally = Tally(name, seed)
        tally.fail(f"the scenario stopped: {type(exc).__name__}: {str(exc)[:500]}")
        tally.finish()
        tally.seconds = time.monotonic() - started
    tally.scenario = name
    return tally


def _units(name: str, rounds: int) -> int:
    """How many numbered rounds a scenario has: examples for the in-process fuzzing."""
    return EXAMPLES_PER_ROUND * rounds if name in IN_PROCESS else rounds


def _replay(seed: int, rounds: int, names: list[str], only: int | None = None) -> str:
    """The command line that runs ``names`` (every scenario if empty) with the same choices."""
    command = f".venv/bin/python benchmarks/faults.py --seed {seed} --rounds {rounds}"
    if names:
        command += f" --only {','.join(names)}"
    return command + (f" --round {only}" if only is not None else "")


def _replays(tally: Tally, seed: int, rounds: int) -> str:
    """The commands that replay a scenario, and its first failing rounds one by one."""
    lines = [f"replay: {_replay(seed, rounds, [tally.scenario])}"]
    for number in tally.failed_rounds[:SHOWN_ROUNDS]:
        lines.append(f"round {number} alone: {_replay(seed, rounds, [tally.scenario], number)}")
    return "\n".join(lines)


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
