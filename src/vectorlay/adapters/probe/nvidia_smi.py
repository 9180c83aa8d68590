"""GPU utilization from ``nvidia-smi``.

Query: ``nvidia-smi --query-gpu=pci.bus_id,utilization.gpu
--format=csv,noheader,nounits``, one line per GPU the NVIDIA driver holds::

    00000000:53:00.0, 0
    00000000:A8:00.0, 87

nvidia-smi spells the bus id in upper case with an 8-digit domain while
lspci says ``0000:a8:00.0``; both go through
:func:`vectorlay.adapters.probe.pci.normalize_address` before they are compared.
A value nvidia-smi cannot read (``[N/A]``, ``[Not Supported]``) is left out,
never counted as 0.  A GPU it cannot reach at all gives an error line
instead of a row and a non-zero exit status; the other GPUs' rows still
count.  Nothing counts from a run that timed out or printed too much.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from typing import Final

from vectorlay.adapters.commands import first_line, run_command
from vectorlay.adapters.probe.pci import clean_text, normalize_address

log = logging.getLogger(__name__)

QUERY_ARGS: Final = (
    "--query-gpu=pci.bus_id,utilization.gpu",
    "--format=csv,noheader,nounits",
)
OUTPUT_LIMIT: Final = 256 << 10


def parse_utilization(text: str) -> dict[str, int]:
    """PCI address -> utilization percent, for every line that can be read."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        bus_id, comma, rest = line.partition(",")
        if not comma:
            continue
        address = normalize_address(bus_id)
        figure = rest.strip().removesuffix("%").strip()
        if address is None or not figure.isdigit() or len(figure) > 3:
            continue
        percent = int(figure)
        if percent <= 100:
            values[address] = percent
    return values


def mean_utilization(values: Mapping[str, int], addresses: Iterable[str]) -> int | None:
    """Rounded mean over ``addresses`` that have a value; ``None`` when none has."""
    readings = [values[a] for a in addresses if a in values]
    if not readings:
        return None
    # Half up, as a person rounds (Python's round() would send 12.5 to 12).
    return math.floor(sum(readings) / len(readings) + 0.5)


async def query_utilization(nvidia_smi: str, *, timeout: float) -> dict[str, int]:
    """Run the query; an empty mapping when nvidia-smi fails in any way."""
    result = await run_command([nvidia_smi, *QUERY_ARGS], timeout=timeout, limit=OUTPUT_LIMIT)
    if result.returncode is None or result.timed_out or result.truncated:
        # Cut short: what it printed may be half a line or a stale row.
        log.debug(
            "nvidia-smi gave no utilization (timed out %s, output cut %s): %s",
            result.timed_out,
            result.truncated,
            clean_text(result.error or first_line(result.stderr), 120),
        )
        return {}
    text = result.stdout.decode("utf-8", "replace")
    values = parse_utilization(text)
    if result.returncode != 0:
        # One GPU it cannot reach makes it exit non-zero after printing the
        # rows of the others; those readings are sound.
        log.debug(
            "nvidia-smi exited with status %s; %d GPU(s) read: %s",
            result.returncode,
            len(values),
            clean_text(first_line(result.stderr) or _first_non_row(text), 120),
        )
    return values


def _first_non_row(text: str) -> str:
    lines = (line.strip() for line in text.splitlines())
    return next((line for line in lines if line and not parse_utilization(line)), "")


__all__ = ["QUERY_ARGS", "mean_utilization", "parse_utilization", "query_utilization"]
