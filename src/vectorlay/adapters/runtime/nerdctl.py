"""Replica containers through nerdctl: one Kata micro-VM per container.

This module is the only place that knows nerdctl's command lines (the
``*_argv`` functions) and its output formats.  Every call runs as an argv
list, never through a shell, with a timeout after which the call and
everything it started are killed (:func:`run_nerdctl`).

How a replica runs (docs/runtime.md has the reasoning)::

    nerdctl run -d --runtime io.containerd.kata.v2 --name replica-<id>
        --label vectorlay.replica-id=<id> --label vectorlay.gpus=<pci>+<pci>
        --device /dev/vfio/<iommu group> ... --env-file <0600 file> <image>

- Env values never reach argv (world-readable in ``/proc``): they go through
  a ``0600`` file in a ``0700`` directory, removed as soon as ``nerdctl run``
  returns, fails, times out or is cancelled.  A value nerdctl's env-file
  reader would change is refused with :class:`UnsupportedEnvValue`.
- :meth:`NerdctlRuntime.list` finds managed containers with ``nerdctl ps``
  and reads their labels from ``nerdctl inspect --type container`` (a JSON object):
  ``ps`` prints labels as one comma-joined string whose values may contain
  commas, so it is never split.
- :meth:`NerdctlRuntime.changes` follows ``nerdctl events`` (one long-lived
  process, idle when nothing happens) and yields when a managed container
  starts, exits or goes away.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import secrets
import stat
import subprocess
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

import anyio
import msgspec
from anyio.abc import ByteReceiveStream

from vectorlay.adapters.commands import kill_group
from vectorlay.domain.agent.replicas import (
    DEFAULT_OCI_RUNTIME,
    ContainerSpec,
    ContainerState,
    GpuSlot,
    container_name,
)
from vectorlay.domain.messages import ReplicaStatus
from vectorlay.domain.redact import redact_text
from vectorlay.domain.validation import (
    ENV_NAME_RE,
    IOMMU_GROUP_RE,
    PCI_ADDRESS_RE,
    check_image,
    check_replica_id,
    env_value_problem,
)
from vectorlay.errors import (
    ConfigError,
    ContainerRuntimeError,
    ImageNotFound,
    NameInUse,
    RuntimeNotInstalled,
    RuntimeTimeout,
    SnapshotterUnavailable,
    UnsupportedEnvValue,
    ValidationError,
)

log = logging.getLogger(__name__)

LABEL_REPLICA_ID: Final = "vectorlay.replica-id"
LABEL_GPUS: Final = "vectorlay.gpus"
# Comma-free on purpose: `nerdctl ps` joins all labels with commas.
GPU_SEPARATOR: Final = "+"

# nerdctl reads env files with Go's bufio.Scanner, whose default token limit
# is 64 KiB; a longer line makes `nerdctl run` fail ("token too long").
ENV_LINE_MAX_BYTES: Final = 64 * 1024 - 1
ENV_FILE_SUFFIX: Final = ".env"
INSPECT_OUTPUT_LIMIT: Final = 64 * 1024 * 1024
STDOUT_LIMIT: Final = 1024 * 1024
# `nerdctl run` redraws its pull progress every 100 ms for as long as a pull
# takes, terminal or not: of stderr only the end (where the error is) is kept.
STDERR_TAIL: Final = 64 * 1024

# containerd identifiers; checked before an id goes on argv, where a leading
# "-" would read as a flag.
CONTAINER_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,75}")

# containerd topics after which a managed container may look different.
WATCHED_TOPICS: Final = frozenset(
    {
        "/tasks/start",
        "/tasks/exit",
        "/tasks/delete",
        "/tasks/oom",
        "/tasks/paused",
        "/tasks/resumed",
        "/containers/delete",
    }
)
# An event stream that lived this long was healthy: its restart delay resets.
HEALTHY_STREAM_SECONDS: Final = 60.0

Watch = Literal["events", "poll"]
# Aliases for annotations inside NerdctlRuntime, whose list() hides the builtin.
Argv = list[str]


# --- command lines -----------------------------------------------------------


def run_argv(
    nerdctl: str, oci_runtime: str, spec: ContainerSpec, env_file: str | None
) -> list[str]:
    argv = [
        nerdctl,
        "run",
        "-d",
        "--runtime",
        oci_runtime,
        "--name",
        spec.name,
        "--label",
        f"{LABEL_REPLICA_ID}={spec.replica_id}",
    ]
    if spec.gpus:
        argv += ["--label", f"{LABEL_GPUS}={gpu_label(spec.gpus)}"]
    for gpu in spec.gpus:
        argv += ["--device", vfio_device(gpu)]
    if env_file is not None:
        argv += ["--env-file", env_file]
    argv.append(spec.image)
    return argv


def ps_argv(nerdctl: str) -> list[str]:
    return [
        nerdctl,
        "ps",
        "-a",
        "--no-trunc",
        "--format",
        "{{json .}}",
        "--filter",
        f"label={LABEL_REPLICA_ID}",
    ]


def inspect_argv(nerdctl: str, refs: Sequence[str]) -> list[str]:
    # `--type container`: an image whose name looks like a container
    # reference can never answer instead.
    return [nerdctl, "inspect", "--type", "container", *refs]


def stop_argv(nerdctl: str, name: str, grace: float) -> list[str]:
    return [nerdctl, "stop", "-t", str(grace_seconds(grace)), name]


def rm_argv(nerdctl: str, name: str) -> list[str]:
    return [nerdctl, "rm", "-f", name]


def events_argv(nerdctl: str) -> list[str]:
    return [nerdctl, "events", "--format", "{{json .}}"]


def grace_seconds(grace: float) -> int:
    """``nerdctl stop -t`` takes whole seconds; round up so a short grace is not 0."""
    if not math.isfinite(grace) or grace <= 0:
        return 0
    return math.ceil(grace)


def gpu_label(gpus: Iterable[GpuSlot]) -> str:
    return GPU_SEPARATOR.join(g.pci_address for g in gpus)


def vfio_device(gpu: GpuSlot) -> str:
    return f"/dev/vfio/{gpu.iommu_group}"


def check_spec(spec: ContainerSpec) -> None:
    """Refuse what must never reach nerdctl's argv (the domain checked it already)."""
    try:
        check_replica_id(spec.replica_id, "replica_id")
        check_image(spec.image, "image")
    except ValidationError as exc:
        raise ContainerRuntimeError(str(exc)) from exc
    for gpu in spec.gpus:
        if not PCI_ADDRESS_RE.fullmatch(gpu.pci_address):
            raise ContainerRuntimeError(f"GPU {gpu.pci_address!r}: not a PCI address")
        if not IOMMU_GROUP_RE.fullmatch(gpu.iommu_group):
            raise ContainerRuntimeError(
                f"GPU {gpu.pci_address}: IOMMU group {gpu.iommu_group!r} is not a number"
            )


# --- env file ----------------------------------------------------------------


def env_file_bytes(env: Mapping[str, str]) -> bytes:
    """The ``--env-file`` content for ``env``, one ``NAME=value`` line each.

    nerdctl reads the file line by line, trims each line's surrounding
    whitespace, skips empty lines and lines starting with ``#``, and splits
    at the first ``=`` (a line without ``=`` would copy nerdctl's own
    environment).  Names start with a letter or ``_`` and values may contain
    ``=``, ``#`` and quotes unchanged; what the format cannot carry is
    refused, naming the variable and never the value.
    """
    lines: list[bytes] = []
    for name in sorted(env):
        value = env[name]
        if not ENV_NAME_RE.fullmatch(name):
            raise UnsupportedEnvValue(_clip(repr(name)), "invalid variable name")
        problem = env_value_problem(value)
        if problem is not None:
            raise UnsupportedEnvValue(name, problem)
        try:
            line = f"{name}={value}".encode()
        except UnicodeEncodeError:
            raise UnsupportedEnvValue(name, "value is not valid Unicode text") from None
        if len(line) > ENV_LINE_MAX_BYTES:
            raise UnsupportedEnvValue(
                name,
                f"NAME=value longer than nerdctl's env-file limit of {ENV_LINE_MAX_BYTES} bytes",
            )
        lines.append(line + b"\n")
    return b"".join(lines)


def prepare_env_dir(path: Path) -> Path:
    """Create the private env-file directory (0700) and clear leftovers.

    Files left there by a process that died between writing and removing
    them hold secrets; the directory belongs to this runtime alone.
    """
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.lstat()
        if not stat.S_ISDIR(info.st_mode):
            raise ConfigError(f"env directory {path} is not a directory")
        if stat.S_IMODE(info.st_mode) != 0o700:
            path.chmod(0o700)
        for entry in path.iterdir():
            if entry.is_file() and not entry.is_symlink():
                entry.unlink(missing_ok=True)
    except OSError as exc:
        raise ConfigError(f"env directory {path}: {exc.strerror or exc}") from exc
    return path


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.error("could not remove env file %s: %s", path, exc.strerror or exc)


# --- nerdctl's output --------------------------------------------------------


class _PsLine(msgspec.Struct):
    id: str = msgspec.field(name="ID")
    names: str = msgspec.field(default="", name="Names")
    status: str = msgspec.field(default="", name="Status")


class _InspectState(msgspec.Struct):
    status: str = msgspec.field(default="", name="Status")
    exit_code: int = msgspec.field(default=0, name="ExitCode")


class _InspectConfig(msgspec.Struct):
    labels: dict[str, str] | None = msgspec.field(default=None, name="Labels")
    image: str = msgspec.field(default="", name="Image")


class _Inspected(msgspec.Struct):
    id: str = msgspec.field(default="", name="Id")
    name: str = msgspec.field(default="", name="Name")
    image: str = msgspec.field(default="", name="Image")
    # Older nerdctl prints null for a container without a task.
    state: _InspectState | None = msgspec.field(default=None, name="State")
    config: _InspectConfig | None = msgspec.field(default=None, name="Config")


_PS_DECODER: Final = msgspec.json.Decoder(_PsLine)
_INSPECT_DECODER: Final = msgspec.json.Decoder(list[_Inspected])


@dataclass(frozen=True, slots=True)
class PsEntry:
    container_id: str
    names: str
    status: str


@dataclass(frozen=True, slots=True)
class Listed:
    """A managed container: its containerd id, its name and what it means to the agent."""

    container_id: str
    name: str
    state: ContainerState


ListedItems = list[Listed]


def parse_ps(text: str) -> list[PsEntry]:
    """``nerdctl ps --format '{{json .}}'``: one JSON object per line.

    Only the id, names and status are read; ``Labels`` is a comma-joined
    string that cannot be split reliably and is left alone.
    """
    entries: list[PsEntry] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = _PS_DECODER.decode(line)
        except msgspec.DecodeError as exc:
            raise ContainerRuntimeError(
                f"nerdctl ps printed an unreadable line {number}: {exc}"
            ) from None
        entries.append(PsEntry(item.id, item.names, item.status))
    return entries


def parse_inspect(text: str) -> list[Listed]:
    """``nerdctl inspect --type container``: a JSON array of docker-compatible objects.

    Containers without a valid ``vectorlay.replica-id`` label are skipped.
    The objects also hold each container's environment (secrets): nothing
    of them but the fields read here is kept or logged.
    """
    if not text.strip():
        return []
    try:
        items = _INSPECT_DECODER.decode(text)
    except msgspec.DecodeError as exc:
        raise ContainerRuntimeError(
            f"nerdctl inspect printed something other than a container list: {exc}"
        ) from None
    listed: list[Listed] = []
    for item in items:
        state = container_state(item)
        if state is not None:
            listed.append(Listed(item.id, item.name, state))
    return listed


def container_state(item: _Inspected) -> ContainerState | None:
    labels = (item.config.labels if item.config is not None else None) or {}
    replica_id = labels.get(LABEL_REPLICA_ID)
    if replica_id is None:
        return None
    try:
        check_replica_id(replica_id, LABEL_REPLICA_ID)
    except ValidationError:
        log.warning("container %s has an invalid %s label; ignored", item.id[:12], LABEL_REPLICA_ID)
        return None
    raw = item.state.status if item.state is not None else ""
    code = item.state.exit_code if item.state is not None else None
    status, exit_code = replica_status(raw, code)
    image = item.image or (item.config.image if item.config is not None else "")
    gpus = parse_gpu_label(labels.get(LABEL_GPUS, ""), item.id)
    return ContainerState(replica_id, status, exit_code, gpus, image)


def replica_status(status: str, exit_code: int | None) -> tuple[ReplicaStatus, int | None]:
    """Map nerdctl's container status (``State.Status``) to a replica status.

    - ``running``; and ``paused``/``pausing``/``restarting``, whose VM is
      alive and keeps its GPUs: ``running``.
    - ``exited``: ``exited`` with code 0, else ``failed``.
    - ``created``, empty (no task: it never started, or the host rebooted),
      ``unknown`` and anything new: ``failed``, without an exit code.
    """
    match status.lower():
        case "running" | "paused" | "pausing" | "restarting":
            return ReplicaStatus.RUNNING, None
        case "exited" | "stopped":
            code = exit_code or 0
            return (ReplicaStatus.EXITED if code == 0 else ReplicaStatus.FAILED), code
        case _:
            return ReplicaStatus.FAILED, None


def parse_gpu_label(value: str, container_id: str = "") -> tuple[str, ...]:
    parts = [p for p in value.split(GPU_SEPARATOR) if p]
    valid = tuple(p for p in parts if PCI_ADDRESS_RE.fullmatch(p))
    if len(valid) != len(parts):
        log.warning(
            "container %s: %s label holds something other than PCI addresses; kept %d of %d",
            container_id[:12],
            LABEL_GPUS,
            len(valid),
            len(parts),
        )
    return valid


def one_per_replica(listed: Iterable[Listed]) -> list[ContainerState]:
    """One state per replica id, should two containers carry the same label.

    The one named ``replica-<id>`` wins, then a running one.
    """
    best: dict[str, tuple[tuple[bool, bool], ContainerState]] = {}
    for item in listed:
        rid = item.state.replica_id
        rank = (
            item.name.lstrip("/") == container_name(rid),
            item.state.status is ReplicaStatus.RUNNING,
        )
        if rid not in best or rank > best[rid][0]:
            best[rid] = (rank, item.state)
    return [best[rid][1] for rid in sorted(best)]


_STATUS_WORDS_RE: Final = re.compile(r"[A-Za-z]+(?: \(-?[0-9]+\))?")


def ps_status_key(status: str) -> str:
    """``Exited (1) 3 seconds ago`` -> ``Exited (1)``: the part that is state, not age."""
    match = _STATUS_WORDS_RE.match(status.strip())
    return match.group(0) if match else status.strip()


# --- nerdctl's errors --------------------------------------------------------

# nerdctl logs through logrus: `FATA[0000] message` when stderr is a
# terminal (the published captures), `time="…" level=fatal msg="…"` when it
# is a pipe, which is how the agent runs it.  Both are understood.
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
    return _clip(" ".join("; ".join(lines).split()), MAX_MESSAGE_CHARS)


def nerdctl_error(stderr: str, secrets: Iterable[str] = ()) -> str | None:
    """A short message for what nerdctl said went wrong, or ``None``.

    ``secrets`` are replaced before the text is shortened: cut at the length
    limit or with its spaces squeezed, a value would no longer match, and a
    piece of it would get through.
    """
    values = list(secrets)
    raw = fatal_message(stderr)
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
    if "binary not installed" in text or "failed to resolve runtime path" in text:
        return RuntimeNotInstalled
    if "snapshotter not loaded" in text:
        return SnapshotterUnavailable
    if (
        "pull access denied" in text
        or "repository does not exist" in text
        or "manifest unknown" in text
        or ("failed to resolve reference" in text and text.rstrip().endswith("not found"))
    ):
        return ImageNotFound
    return ContainerRuntimeError


def _worded_for_result(exc: ContainerRuntimeError, spec: ContainerSpec) -> ContainerRuntimeError:
    """PROTOCOL's words first (``image not found: <image>``), then what nerdctl said.

    Registries answer "pull access denied, repository does not exist or may
    require authorization" for a missing image and for a private one alike,
    so the operator gets both.
    """
    if not isinstance(exc, ImageNotFound):
        return exc
    detail = str(exc).removeprefix(f'failed to resolve reference "{spec.image}": ')
    return ImageNotFound(f"image not found: {spec.image} ({detail})")


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- events ------------------------------------------------------------------


class _EventLine(msgspec.Struct):
    topic: str = msgspec.field(default="", name="Topic")
    # Present since nerdctl 1.7 (2024); older versions carry it in Event only.
    container_id: str = msgspec.field(default="", name="ID")
    event: str = msgspec.field(default="", name="Event")


class _EventPayload(msgspec.Struct):
    container_id: str = ""
    id: str = ""


_EVENT_DECODER: Final = msgspec.json.Decoder(_EventLine)
_PAYLOAD_DECODER: Final = msgspec.json.Decoder(_EventPayload)


@dataclass(frozen=True, slots=True)
class ContainerEvent:
    topic: str
    container_id: str
    # The process the event is about: the container's own id for its main
    # task, an exec id for a process started inside it.
    process_id: str


def parse_event(line: bytes | str) -> ContainerEvent | None:
    """One line of ``nerdctl events --format '{{json .}}'``, ``None`` if not an event."""
    if not line.strip():
        return None
    try:
        outer = _EVENT_DECODER.decode(line)
    except msgspec.DecodeError:
        return None
    payload = _EventPayload()
    if outer.event:
        with contextlib.suppress(msgspec.DecodeError):
            payload = _PAYLOAD_DECODER.decode(outer.event)
    if outer.topic.startswith("/containers/"):
        # Container events name the container in "id"; there is no process.
        cid = outer.container_id or payload.container_id or payload.id
        return ContainerEvent(outer.topic, cid, "")
    cid = outer.container_id or payload.container_id
    return ContainerEvent(outer.topic, cid, payload.id)


class _LineReader:
    """Lines from a byte stream; cancellation-safe (a cancelled read loses nothing)."""

    def __init__(self, stream: ByteReceiveStream, limit: int = 1 << 20) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._limit = limit
        self._eof = False

    async def readline(self) -> bytes | None:
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                return line
            if self._eof:
                rest, self._buffer = bytes(self._buffer), bytearray()
                return rest or None
            if len(self._buffer) > self._limit:
                # An endless line is not an event; drop what we have.
                self._buffer.clear()
            try:
                self._buffer += await self._stream.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                self._eof = True


# --- running nerdctl ----------------------------------------------------------


class _TooMuchOutput(Exception):
    pass


class _SpawnFailed(Exception):
    """The program could not be started; the text is the system's reason."""


async def run_nerdctl(
    argv: Sequence[str], *, timeout: float, limit: int
) -> tuple[int, bytes, bytes]:
    """Run one nerdctl command: (exit status, stdout, the tail of stderr).

    It runs in a session of its own: at the deadline (``TimeoutError``), on
    more than ``limit`` bytes of stdout, or on cancellation, its whole
    process group is killed and reaped.  A program that cannot be started
    raises ``_SpawnFailed``.
    """
    try:
        process = await anyio.open_process(
            list(argv), stdin=subprocess.DEVNULL, start_new_session=True
        )
    except OSError as exc:
        raise _SpawnFailed(exc.strerror or type(exc).__name__) from None
    stdout = bytearray()
    stderr = bytearray()
    overflow = False
    returncode: int | None = None

    async def read_stdout(stream: ByteReceiveStream) -> None:
        nonlocal overflow
        async for chunk in stream:
            stdout.extend(chunk)
            if len(stdout) > limit:
                overflow = True
                kill_group(process)
                return

    async def read_stderr(stream: ByteReceiveStream) -> None:
        async for chunk in stream:
            stderr.extend(chunk)
            if len(stderr) > 2 * STDERR_TAIL:
                del stderr[:-STDERR_TAIL]

    try:
        with anyio.fail_after(timeout if math.isfinite(timeout) else None):
            async with anyio.create_task_group() as group:
                if process.stdout is not None:
                    group.start_soon(read_stdout, process.stdout)
                if process.stderr is not None:
                    group.start_soon(read_stderr, process.stderr)
            returncode = await process.wait()
    finally:
        with anyio.CancelScope(shield=True):
            if returncode is None:
                kill_group(process)
            await process.aclose()
    if overflow:
        raise _TooMuchOutput
    return returncode, bytes(stdout), bytes(stderr[-STDERR_TAIL:])


# --- the adapter -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Output:
    returncode: int
    stdout: str
    stderr: str


@dataclass
class _ReplicaLock:
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    users: int = 0


class NerdctlRuntime:
    """The :class:`~vectorlay.ports.Runtime` port on nerdctl.

    ``call_timeout`` bounds ``ps``, ``inspect`` and ``rm``; ``run_timeout``
    bounds ``run`` (it pulls the image); ``stop`` gets ``grace`` plus
    ``call_timeout``.  At most ``max_concurrency`` runs and stops proceed at
    once, and the calls for one replica are serialized; listing has its own
    lane, so a slow image pull never delays exit detection.  ``watch``
    picks how :meth:`changes` learns of exits: ``"events"`` (default) or
    ``"poll"`` (``nerdctl ps`` every ``poll_interval`` seconds).
    """

    def __init__(
        self,
        *,
        nerdctl: str = "nerdctl",
        oci_runtime: str = DEFAULT_OCI_RUNTIME,
        env_dir: Path,
        call_timeout: float = 30.0,
        run_timeout: float = 600.0,
        max_concurrency: int = 4,
        watch: Watch = "events",
        poll_interval: float = 1.0,
        events_restart_delay: float = 1.0,
        events_restart_cap: float = 30.0,
        events_settle: float = 0.5,
        debounce: float = 0.05,
    ) -> None:
        if not nerdctl:
            raise ConfigError("nerdctl path must not be empty")
        if not oci_runtime or oci_runtime.startswith("-") or any(c.isspace() for c in oci_runtime):
            raise ConfigError(f"not an OCI runtime name: {oci_runtime!r}")
        for name, value in (
            ("call_timeout", call_timeout),
            ("run_timeout", run_timeout),
            ("poll_interval", poll_interval),
            ("events_restart_delay", events_restart_delay),
        ):
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number of seconds")
        if max_concurrency < 1:
            raise ConfigError("max_concurrency must be at least 1")
        if watch not in ("events", "poll"):
            raise ConfigError(f"watch must be 'events' or 'poll', not {watch!r}")
        if any(c in str(env_dir) for c in ',"\n\r'):
            # nerdctl reads --env-file as a comma-separated (CSV) list of paths.
            raise ConfigError(f"env directory {str(env_dir)!r}: no commas or quotes, please")
        self._nerdctl = nerdctl
        self._oci_runtime = oci_runtime
        self._env_dir = prepare_env_dir(env_dir)
        self._call_timeout = call_timeout
        self._run_timeout = run_timeout
        self._watch: Watch = watch
        self._poll_interval = poll_interval
        self._restart_delay = events_restart_delay
        self._restart_cap = max(events_restart_cap, events_restart_delay)
        self._settle = max(events_settle, 0.0)
        self._debounce = max(debounce, 0.0)
        self._slots = anyio.CapacityLimiter(max_concurrency)
        self._replica_locks: dict[str, _ReplicaLock] = {}
        self._list_lock = anyio.Lock()
        # Container ids worth waking the agent for; kept by list() and run().
        self._known_ids: set[str] = set()
        self._starting = 0

    # --- the port ----------------------------------------------------------

    async def run(self, spec: ContainerSpec) -> ContainerState:
        check_spec(spec)
        env_data = env_file_bytes(spec.env) if spec.env else None
        async with self._exclusive(spec.replica_id):
            try:
                output = await self._run_container(spec, env_data)
                if output.returncode != 0:
                    raise _worded_for_result(self._failure(output, spec.env.values()), spec)
            except ContainerRuntimeError as exc:
                if not isinstance(exc, NameInUse):
                    # A failed run may leave a created container that holds
                    # the name (and the GPUs the agent is about to free).
                    await self._discard(spec.name)
                raise
            container_id = _last_line(output.stdout)
            if CONTAINER_ID_RE.fullmatch(container_id):
                self._known_ids.add(container_id)
            return await self._started_state(spec, container_id)

    async def stop(self, replica_id: str, *, grace: float) -> None:
        try:
            check_replica_id(replica_id, "replica_id")
        except ValidationError as exc:
            raise ContainerRuntimeError(str(exc)) from exc
        name = container_name(replica_id)
        async with self._exclusive(replica_id):
            try:
                output = await self._call(
                    stop_argv(self._nerdctl, name, grace),
                    # nerdctl waits the whole grace before its SIGKILL.
                    timeout=grace_seconds(grace) + self._call_timeout,
                    what=f"stop {name}",
                )
                if output.returncode != 0 and not is_no_such_container(output.stderr):
                    log.warning(
                        "nerdctl stop %s: %s; removing it by force", name, self._failure(output)
                    )
            except RuntimeTimeout as exc:
                log.warning("%s; removing it by force", exc)
            output = await self._call(
                rm_argv(self._nerdctl, name), timeout=self._call_timeout, what=f"rm {name}"
            )
            # With -f, nerdctl exits 0 even when removal failed: read its log.
            failed = output.returncode != 0 or fatal_message(output.stderr) is not None
            if failed and not is_no_such_container(output.stderr):
                raise self._failure(output)

    async def list(self) -> Sequence[ContainerState]:
        async with self._list_lock:
            before = set(self._known_ids)
            output = await self._call(ps_argv(self._nerdctl), timeout=self._call_timeout, what="ps")
            if output.returncode != 0:
                raise self._failure(output)
            refs: Argv = []
            for entry in parse_ps(output.stdout):
                if CONTAINER_ID_RE.fullmatch(entry.container_id):
                    refs.append(entry.container_id)
                else:
                    log.warning(
                        "ignoring a container with an unusable id: %r", _clip(entry.container_id)
                    )
            listed = await self._inspect(refs) if refs else []
            # Ids a run() learned while we listed stay known.
            self._known_ids = {item.container_id for item in listed} | (self._known_ids - before)
            return one_per_replica(listed)

    async def changes(self) -> AsyncGenerator[None, None]:
        source = self._poll_changes() if self._watch == "poll" else self._event_changes()
        async with aclosing(source):
            async for _ in source:
                yield

    # --- calls -------------------------------------------------------------

    async def _call(
        self, argv: Argv, *, timeout: float, what: str, limit: int = STDOUT_LIMIT
    ) -> _Output:
        started = anyio.current_time()
        try:
            returncode, stdout, stderr = await run_nerdctl(argv, timeout=timeout, limit=limit)
        except _SpawnFailed as exc:
            raise RuntimeNotInstalled(f"cannot run {self._nerdctl}: {exc}") from None
        except TimeoutError:
            raise RuntimeTimeout(f"nerdctl {what} did not finish within {timeout:g} s") from None
        except _TooMuchOutput:
            raise ContainerRuntimeError(f"nerdctl {what} printed more than {limit} bytes") from None
        finally:
            log.debug("nerdctl %s: %.3f s", what, anyio.current_time() - started)
        return _Output(
            returncode, stdout.decode("utf-8", "replace"), stderr.decode("utf-8", "replace")
        )

    def _failure(self, output: _Output, secret_values: Iterable[str] = ()) -> ContainerRuntimeError:
        values = list(secret_values)
        message = (
            nerdctl_error(output.stderr, values) or f"nerdctl exited with code {output.returncode}"
        )
        message = redact_text(message, values)
        return error_class(message)(message)

    @asynccontextmanager
    async def _exclusive(self, replica_id: str) -> AsyncIterator[None]:
        """One call sequence per replica at a time, and a free slot."""
        entry = self._replica_locks.setdefault(replica_id, _ReplicaLock())
        entry.users += 1
        try:
            async with entry.lock, self._slots:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._replica_locks[replica_id]

    async def _run_container(self, spec: ContainerSpec, env_data: bytes | None) -> _Output:
        self._starting += 1
        env_file: Path | None = None
        try:
            if env_data is not None:
                env_file = self._env_dir / f"{spec.name}.{secrets.token_hex(8)}{ENV_FILE_SUFFIX}"
                try:
                    _write_private(env_file, env_data)
                except OSError as exc:
                    raise ContainerRuntimeError(
                        f"cannot write the env file: {exc.strerror or exc}"
                    ) from None
            argv = run_argv(
                self._nerdctl, self._oci_runtime, spec, str(env_file) if env_file else None
            )
            return await self._call(argv, timeout=self._run_timeout, what=f"run {spec.name}")
        finally:
            self._starting -= 1
            if env_file is not None:
                _remove_quietly(env_file)

    async def _discard(self, name: str) -> None:
        try:
            output = await self._call(
                rm_argv(self._nerdctl, name), timeout=self._call_timeout, what=f"rm {name}"
            )
        except ContainerRuntimeError as exc:
            log.warning("could not remove %s after a failed run: %s", name, exc)
            return
        if fatal_message(output.stderr) is not None and not is_no_such_container(output.stderr):
            log.warning("could not remove %s after a failed run: %s", name, self._failure(output))

    async def _inspect(self, refs: Sequence[str]) -> ListedItems:
        output = await self._call(
            inspect_argv(self._nerdctl, refs),
            timeout=self._call_timeout,
            what="inspect",
            limit=INSPECT_OUTPUT_LIMIT,
        )
        # A container removed between ps and inspect is simply gone; nerdctl
        # still prints the others and exits 1.
        if output.returncode != 0 and not is_no_such_container(output.stderr):
            raise self._failure(output)
        return parse_inspect(output.stdout)

    async def _started_state(self, spec: ContainerSpec, container_id: str) -> ContainerState:
        ref = container_id if CONTAINER_ID_RE.fullmatch(container_id) else spec.name
        try:
            listed = await self._inspect([ref])
        except ContainerRuntimeError as exc:
            log.warning("started %s but could not inspect it: %s", spec.name, exc)
        else:
            for item in listed:
                if item.state.replica_id == spec.replica_id:
                    self._known_ids.add(item.container_id)
                    return item.state
            # nerdctl said it started the container, and says now that there is
            # none: reporting it running would hold its GPUs for a ghost.
            raise ContainerRuntimeError(
                f"nerdctl run exited 0, but no container {spec.name} exists afterwards"
            )
        # Inspect itself failed: nerdctl run -d returns once the task started.
        return ContainerState(
            spec.replica_id,
            ReplicaStatus.RUNNING,
            None,
            tuple(g.pci_address for g in spec.gpus),
            spec.image,
        )

    # --- watching ----------------------------------------------------------

    async def _event_changes(self) -> AsyncGenerator[None, None]:
        delay = self._restart_delay
        while True:
            began = anyio.current_time()
            stream = self._event_stream()
            async with aclosing(stream):
                async for _ in stream:
                    yield
            if anyio.current_time() - began >= HEALTHY_STREAM_SECONDS:
                delay = self._restart_delay
            log.warning("nerdctl events stopped; restarting it in %.1f s", delay)
            await anyio.sleep(delay)
            delay = min(delay * 2, self._restart_cap)

    async def _event_stream(self) -> AsyncGenerator[None, None]:
        """Yield once when the stream is up, then after each burst of relevant events."""
        try:
            process = await anyio.open_process(
                events_argv(self._nerdctl),
                stdin=subprocess.DEVNULL,
                # Its stderr is never read: a full pipe must not stall it.
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            log.warning("cannot run %s events: %s", self._nerdctl, exc.strerror or exc)
            yield  # the consumer's list() will say what is wrong
            return
        try:
            assert process.stdout is not None
            reader = _LineReader(process.stdout)
            # Whatever happened before the subscription is caught by one list.
            await anyio.sleep(self._settle)
            yield
            while True:
                line = await reader.readline()
                if line is None:
                    break
                if not self._relevant(line):
                    continue
                # Gather the rest of the burst (exit, delete, ...) into one wake-up.
                ended = False
                with anyio.move_on_after(self._debounce):
                    while not ended:
                        ended = await reader.readline() is None
                yield
                if ended:
                    break
        finally:
            with anyio.CancelScope(shield=True):
                kill_group(process)
                await process.aclose()
            log.debug("nerdctl events exited with %s", process.returncode)

    def _relevant(self, line: bytes) -> bool:
        event = parse_event(line)
        if event is None or event.topic not in WATCHED_TOPICS:
            return False
        if event.process_id and event.container_id and event.process_id != event.container_id:
            return False  # a process exec'd inside the container, not the container
        return event.container_id in self._known_ids or self._starting > 0

    async def _poll_changes(self) -> AsyncGenerator[None, None]:
        last: frozenset[tuple[str, str]] | None = None
        first = True
        while True:
            snapshot: frozenset[tuple[str, str]] | None
            try:
                output = await self._call(
                    ps_argv(self._nerdctl), timeout=self._call_timeout, what="ps"
                )
                snapshot = (
                    frozenset(
                        (e.container_id, ps_status_key(e.status)) for e in parse_ps(output.stdout)
                    )
                    if output.returncode == 0
                    else None
                )
            except ContainerRuntimeError as exc:
                log.warning("polling containers failed: %s", exc)
                snapshot = None
            if first or (snapshot is not None and snapshot != last):
                yield
            first = False
            if snapshot is not None:
                last = snapshot
            await anyio.sleep(self._poll_interval)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


if TYPE_CHECKING:
    from vectorlay import ports

    _runtime: ports.Runtime = NerdctlRuntime(env_dir=Path("/nonexistent"))


__all__ = [
    "GPU_SEPARATOR",
    "LABEL_GPUS",
    "LABEL_REPLICA_ID",
    "ContainerEvent",
    "Listed",
    "NerdctlRuntime",
    "PsEntry",
    "check_spec",
    "env_file_bytes",
    "error_class",
    "events_argv",
    "inspect_argv",
    "nerdctl_error",
    "parse_event",
    "parse_gpu_label",
    "parse_inspect",
    "parse_ps",
    "prepare_env_dir",
    "ps_argv",
    "replica_status",
    "rm_argv",
    "run_argv",
    "stop_argv",
]
