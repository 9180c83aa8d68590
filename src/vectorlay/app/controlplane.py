"""Placeholder until this command lands."""

from __future__ import annotations

import sys
from typing import Any


def main(settings: Any) -> int:
    print("vectorlay-agent: this command is not available yet", file=sys.stderr)
    return 2
