"""Reprs that never show secrets (tokens, env values).

A repr can end up in a log line, a traceback or a debugger; the Structs that
carry secrets build theirs here, for ``repr()`` and for rich's pretty printer
(msgspec's own ``__rich_repr__`` would show every field as it is).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


class _Shown:
    """Text that a repr prints as it is, without quotes."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _hide(value: Any) -> _Shown:
    if isinstance(value, Mapping):
        # Names of env vars are not secret and help an operator; values are.
        return _Shown(f"<{len(value)} redacted: {sorted(value)}>")
    return _Shown("<redacted>")


def redacted_items(obj: Any, secret: frozenset[str]) -> list[tuple[str, Any]]:
    """(field, value) pairs of a Struct, secret fields replaced."""
    return [
        (name, _hide(getattr(obj, name)) if name in secret else getattr(obj, name))
        for name in obj.__struct_fields__
    ]


def redacted_repr(obj: Any, secret: frozenset[str]) -> str:
    inner = ", ".join(f"{name}={value!r}" for name, value in redacted_items(obj, secret))
    return f"{type(obj).__name__}({inner})"


def redact_text(message: str, values: Iterable[str]) -> str:
    """``message`` with every secret value of ``values`` replaced.

    Belt and braces for texts that come from elsewhere (nerdctl's stderr, an
    agent's error): none should echo an env value, but none is passed on if
    it does.  Values under 4 characters are left: replacing every "1" or
    "on" would garble the text and hide nothing.
    """
    # Longest first: a value that starts another would otherwise leave the rest of it.
    for value in sorted(values, key=len, reverse=True):
        if len(value) >= 4 and value in message:
            message = message.replace(value, "<redacted>")
    return message
