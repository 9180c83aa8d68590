"""Wire codec speed: msgspec typed Structs against stdlib json with plain dicts.

Measures, in one run and on the same messages, the time per encode and per
decode of a heartbeat and of a deploy:

- ``msgspec typed``: ``messages.encode`` / a typed ``msgspec.json.Decoder``
  (what the library does at the edge, without the error handling wrapper);
- ``decode_*()``: the public ``decode_inbound`` / ``decode_outbound``, which add
  the size limit check and turn decode failures into ``ProtocolError``;
- ``json (dict)``: ``json.dumps(dict).encode()`` / ``json.loads`` into a dict,
  the baseline.

Prints nanoseconds per operation (best of interleaved batches) and the ratio
json / msgspec. Run: ``.venv/bin/python benchmarks/codec.py [--rounds N]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import timeit
from collections.abc import Callable
from typing import Any

import msgspec

from vectorlay.domain import messages as m

TARGET_HEARTBEAT_DECODE_SPEEDUP = 4.0


def heartbeat() -> m.Heartbeat:
    containers = [
        m.ReplicaReport(
            f"replica-{i:04d}", m.ReplicaStatus.RUNNING if i % 5 else m.ReplicaStatus.EXITED
        )
        for i in range(8)
    ]
    status = m.HeartbeatStatus(
        containers=containers,
        gpu_utilization=78,
        memory_used_gb=24,
        memory_total_gb=64,
        storage=m.Storage("/data", 500, 120, 24),
    )
    return m.Heartbeat(m.HeartbeatPayload(status, seq=123456, sent_at="2026-01-01T12:00:30Z"))


def deploy() -> m.Deploy:
    env = {f"VAR_{i}": f"value-{i}-" + "x" * 24 for i in range(12)}
    return m.Deploy(
        m.DeployPayload(
            replica_id="7f3a9b2c-1d4e-4f5a-8b6c-9d0e1f2a3b4c",
            image="ghcr.io/acme/llm-server:1.2.3@sha256:" + "ab" * 32,
            gpu_count=2,
            env_vars=env,
        )
    )


def interleaved_ns(cases: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
    """Best time per call of each case, in nanoseconds.

    The cases take turns, one batch of about 20 ms each per round, so that a
    burst of load on a shared machine hits them all alike rather than
    skewing the ratios.
    """
    timers = {label: timeit.Timer(func) for label, func in cases.items()}
    numbers = {label: max(1, timer.autorange()[0] // 10) for label, timer in timers.items()}
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(rounds):
        for label, timer in timers.items():
            seconds = timer.timeit(number=numbers[label])
            best[label] = min(best[label], seconds / numbers[label] * 1e9)
    return best


def bench_message(
    name: str,
    message: m.Message,
    decode_public: Callable[[bytes], Any],
    decoder: msgspec.json.Decoder[Any],
    rounds: int,
) -> dict[str, float]:
    data = m.encode(message)
    as_dict = json.loads(data)
    # Sanity: every path decodes the same frame to the same content.
    assert decoder.decode(data) == message == decode_public(data)
    assert json.loads(json.dumps(as_dict).encode()) == as_dict

    public = f"decode {decode_public.__name__}()"
    results = interleaved_ns(
        {
            "encode msgspec typed": lambda: m.encode(message),
            "encode json (dict)": lambda: json.dumps(as_dict).encode(),
            "decode msgspec typed": lambda: decoder.decode(data),
            public: lambda: decode_public(data),
            "decode json (dict)": lambda: json.loads(data),
        },
        rounds,
    )
    print(f"\n{name}: {len(data)} bytes")
    for label, ns in results.items():
        print(f"  {label:<28} {ns:9.0f} ns/op")
    enc = results["encode json (dict)"] / results["encode msgspec typed"]
    dec = results["decode json (dict)"] / results["decode msgspec typed"]
    pub = results["decode json (dict)"] / results[public]
    print(f"  encode speedup, json / msgspec typed:     {enc:5.1f}x")
    print(f"  decode speedup, json / msgspec typed:     {dec:5.1f}x")
    print(f"  decode speedup, json / {public[7:]:<18} {pub:5.1f}x")
    return {"encode": enc, "decode": dec, "decode_public": pub}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="batches per case (best is kept)")
    args = parser.parse_args(argv)
    print(
        f"python {platform.python_version()} ({platform.python_implementation()}), "
        f"msgspec {msgspec.__version__}, {platform.machine()}"
    )
    outbound: msgspec.json.Decoder[Any] = msgspec.json.Decoder(m.Outbound)
    inbound: msgspec.json.Decoder[Any] = msgspec.json.Decoder(m.Inbound)
    beat = bench_message("heartbeat", heartbeat(), m.decode_outbound, outbound, args.rounds)
    bench_message("deploy", deploy(), m.decode_inbound, inbound, args.rounds)
    verdict = "met" if beat["decode"] >= TARGET_HEARTBEAT_DECODE_SPEEDUP else "NOT met"
    print(
        f"\ntarget: typed heartbeat decode >= {TARGET_HEARTBEAT_DECODE_SPEEDUP:g}x faster than "
        f"json.loads: {beat['decode']:.1f}x ({verdict}; via decode_outbound(): "
        f"{beat['decode_public']:.1f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
