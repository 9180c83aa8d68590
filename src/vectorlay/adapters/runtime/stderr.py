"""What nerdctl says went wrong (its logrus stderr), as errors of :mod:`vectorlay.errors`.

nerdctl logs through logrus: ``FATA[0000] message`` when stderr is a
terminal (the published captures), ``time="…" level=fatal msg="…"`` when it
is a pipe, which is how the agent runs it.  Both are understood.  The texts
matched by :func:`error_class` come from real captures
(``tests/fixtures/nerdctl/``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Final

from vectorlay.domain.agent.replicas import ContainerSpec
from vectorlay.domain.redact import redact_text
from vectorlay.errors import (
    ContainerRuntimeError,
    ImageNotFound,
    NameInUse,
    RuntimeNotInstalled,
    SnapshotterUnavailable,
)

_ANSI_RE: Final = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_TTY_ENTRY_RE: Final = re.compile(r"(PANI|FATA|ERRO|WARN|INFO|DEBU|TRAC)\[[0-9]+\] ?(.*)")
_LOGFMT_PAIR_RE: Final = re.compile(r'([A-Za-z_][A-Za-z0-9_.-]*)=("(?:[^"\\]|\\.)*"|[^\s"]*)')
_GO_ESCAPE_RE: Final = re.compile(
    r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[0-7]{3}|.)", re.S
)
_GO_SIMPLE_ESCAPES: Final = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
}
_TTY_LEVELS: Final = {
    "PANI": "panic",
    "FATA": "fatal",
    "ERRO": "error",
    "WARN": "warning",
    "INFO": "info",
    "DEBU": "debug",
    "TRAC": "trace",
}
_SEVERITY: Final = {"panic": 2, "fatal": 2, "error": 1}
_PROGRESS_RE: Final = re.compile(r"\|[-+ ]*\|\s*$|^\s*elapsed:")
_ERRORS_HEADER_RE: Final = re.compile(r"[0-9]+ errors?:")
MAX_MESSAGE_CHARS: Final = 400


def go_unquote(token: str) -> str:
    """Undo Go's ``%q`` quoting, as logrus applies to values with spaces or quotes."""
    if len(token) < 2 or token[0] != '"' or token[-1] != '"':
        return token

    def unescape(match: re.Match[str]) -> str:
        code = match.group(1)
        if code[0] in "xuU" and len(code) > 1:
            return chr(int(code[1:], 16))
        if len(code) == 3 and code.isdigit():
            return chr(int(code, 8))
        return _GO_SIMPLE_ESCAPES.get(code, code)

    return _GO_ESCAPE_RE.sub(unescape, token[1:-1])


def _log_entry(line: str) -> tuple[str, str, bool] | None:
    """(level, message, is_terminal_format) of one logrus line, or ``None``."""
    tty = _TTY_ENTRY_RE.match(line)
    if tty is not None:
        return _TTY_LEVELS[tty.group(1)], tty.group(2), True
    if "level=" not in line:
        return None
    pairs = {k: v for k, v in _LOGFMT_PAIR_RE.findall(line)}
    level = pairs.get("level")
    if level is None:
        return None
    return level.lower(), go_unquote(pairs.get("msg", "")), False


def fatal_message(stderr: str) -> str | None:
    """The raw text of nerdctl's most severe (last fatal, else last error) log entry."""
    lines = _ANSI_RE.sub("", stderr).splitlines()
    best: tuple[int, str] | None = None
    index = 0
    while index < len(lines):
        entry = _log_entry(lines[index])
        index += 1
        if entry is None:
            continue
        level, message, tty = entry
        if tty:
            # A terminal entry continues on the lines up to the next entry
            # (`1 errors:` and then one line per error).
            while index < len(lines) and _log_entry(lines[index]) is None:
                if not _PROGRESS_RE.search(lines[index]):
                    message += "\n" + lines[index]
                index += 1
        rank = _SEVERITY.get(level, 0)
        if rank and (best is None or rank >= best[0]):
            best = (rank, message)
    return best[1] if best is not None else None


def short_message(raw: str) -> str:
    """One line: drop the ``N errors:`` header, join the rest, trim, bound."""
    lines = [line.strip() for line in raw.splitlines() if line.strip()]
    if len(lines) > 1 and _ERRORS_HEADER_RE.fullmatch(lines[0]):
        lines = lines[1:]
    return clip(" ".join("; ".join(lines).split()), MAX_MESSAGE_CHARS)


def nerdctl_error(
    stderr: str,
    secrets: Iterable[str] = (),
    reader: Callable[[str], str | None] | None = None,
) -> str | None:
    """A short message for what nerdctl said went wrong, or ``None``.

    ``reader`` finds the error in another engine's stderr (its dialect's
    ``error_message``); nerdctl's logrus entries by default.

    ``secrets`` are replaced before the text is shortened: cut at the length
    limit or with its spaces squeezed, a value would no longer match, and a
    piece of it would get through.
    """
    values = list(secrets)
    raw = (reader or fatal_message)(stderr)
    if raw is not None:
        return short_message(redact_text(raw, values)) or None
    for line in reversed(_ANSI_RE.sub("", stderr).splitlines()):
        if line.strip() and not _PROGRESS_RE.search(line):
            return short_message(redact_text(line, values))
    return None


def is_no_such_container(stderr: str) -> bool:
    """nerdctl said every container it was asked about does not exist."""
    raw = fatal_message(stderr)
    if raw is None:
        return False
    lines = [line.strip() for line in raw.splitlines() if line.strip()]
    if len(lines) > 1 and _ERRORS_HEADER_RE.fullmatch(lines[0]):
        lines = lines[1:]
    # `nerdctl inspect` words it "no such object"; `container inspect`, stop
    # and rm say "no such container".
    return bool(lines) and all(
        line.lower().startswith(("no such container", "no such object")) for line in lines
    )


def error_class(message: str) -> type[ContainerRuntimeError]:
    """The domain error for a nerdctl message (texts from real captures)."""
    text = message.lower()
    if "is already used by id" in text or "is already in use" in text:
        return NameInUse
    if (
        "binary not installed" in text
        or "failed to resolve runtime path" in text
        # Podman: `Error: default OCI runtime "kata" not found: invalid argument`
        or ("oci runtime" in text and "not found" in text)
    ):
        return RuntimeNotInstalled
    if "snapshotter not loaded" in text:
        return SnapshotterUnavailable
    if (
        "pull access denied" in text
        or "repository does not exist" in text
        or "manifest unknown" in text
        # Podman and its Docker API with --pull never: `localhost/x:1: image not known`
        or "image not known" in text
        or "requested access to the resource is denied" in text
        or ("failed to resolve reference" in text and text.rstrip().endswith("not found"))
    ):
        return ImageNotFound
    return ContainerRuntimeError


def failure(
    returncode: int,
    stderr: str,
    secret_values: Iterable[str] = (),
    reader: Callable[[str], str | None] | None = None,
    engine: str = "nerdctl",
) -> ContainerRuntimeError:
    """The error for a call that exited ``returncode``, worded from its stderr.

    ``secret_values`` (the env values of the call) never reach the text.
    """
    values = list(secret_values)
    message = nerdctl_error(stderr, values, reader) or f"{engine} exited with code {returncode}"
    message = redact_text(message, values)
    return error_class(message)(message)


def worded_for_result(exc: ContainerRuntimeError, spec: ContainerSpec) -> ContainerRuntimeError:
    """The protocol's words first (``image not found: <image>``), then what nerdctl said.

    Registries answer "pull access denied, repository does not exist or may
    require authorization" for a missing image and for a private one alike,
    so the operator gets both.
    """
    if not isinstance(exc, ImageNotFound):
        return exc
    detail = str(exc).removeprefix(f'failed to resolve reference "{spec.image}": ')
    return ImageNotFound(f"image not found: {spec.image} ({detail})")


def clip(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = [
    "MAX_MESSAGE_CHARS",
    "clip",
    "error_class",
    "failure",
    "fatal_message",
    "go_unquote",
    "is_no_such_container",
    "nerdctl_error",
    "short_message",
    "worded_for_result",
]
