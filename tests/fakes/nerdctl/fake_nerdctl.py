"""A stateful stand-in for the nerdctl CLI, for tests and benchmarks.

The ``nerdctl`` launcher beside this file runs :func:`main`.  State lives in
the JSON file named by ``$FAKE_NERDCTL_STATE`` (locked with ``flock`` around
every change, so parallel invocations behave); every invocation appends its
argv, pid, start and end time to ``<state>.argv.jsonl``.

Faithful where the agent depends on it (taken from nerdctl's source and the
captures in ``tests/fixtures/nerdctl/``):

- ``run -d`` with ``--runtime``, ``--name``, ``--label``, ``--device``,
  ``--env-file`` (parsed as nerdctl does: lines trimmed, ``#`` and empty
  lines skipped, split at the first ``=``, 64 KiB line limit), ``-e``;
  prints the 64-hex container id.  Errors use the real texts: image not
  found (with pull progress), name already used, runtime shim binary not
  installed (the container stays ``Created``, as with nerdctl), snapshotter
  not loaded.
- ``ps -a --no-trunc --format '{{json .}}' --filter label=K[=V]``: the
  fields of a real line, ``Labels`` comma-joined in random order and
  including nerdctl's own labels whose values hold JSON with commas.
- ``container inspect`` / ``inspect``: the docker-compatible array of a real
  capture, with this container's fields; missing ones make ``N errors:``.
- ``stop -t N`` (a container told to ignore SIGTERM dies after N seconds
  with 137), ``rm -f`` (errors only logged, exit 0, as nerdctl does),
  ``kill [-s SIGNAL]`` (the container ends with 128 + the signal's number).
- ``events --format '{{json .}}'``: containerd topics with nerdctl's JSON
  envelope, each line followed by an empty line (``/tasks/exit`` without
  ``exit_status`` for 0, as protobuf's omitempty; ``/tasks/oom`` before the
  exit of an OOM-killed container); delivered through a unix
  datagram socket per listener, so an idle listener uses no CPU.
- ``images --format '{{json .}}'`` and ``rmi``, with the in-use conflicts
  (``fake_images.py``); ``run`` adds the image it pulls.
- ``--version``.
- Log lines as logrus writes them: ``FATA[0000] …`` on a terminal,
  ``time="…" level=fatal msg="…"`` on a pipe (state ``log_format`` forces one).

Knobs for tests (see :class:`FakeNerdctl`): make a container exit with a
code (now or N seconds after start), delay or hang any subcommand, fail any
subcommand with a given stderr and exit code.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import sys
import time
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NamedTuple

if TYPE_CHECKING:
    import subprocess

# Each invocation is a new process: heavier modules are imported where used,
# so that a call costs about what a small real program does.

STATE_ENV: Final = "FAKE_NERDCTL_STATE"
HERE: Final = Path(__file__).resolve().parent
LAUNCHER: Final = HERE / "nerdctl"
FIXTURES: Final = HERE.parent.parent / "fixtures" / "nerdctl"
# tests/fixtures/versions/nerdctl_--version_2.2.1.txt
VERSION_LINE: Final = "nerdctl version 2.2.1"
DEFAULT_RUNTIMES: Final = ("io.containerd.runc.v2", "io.containerd.kata.v2")
NAMESPACE: Final = "default"
DATA_ROOT: Final = "/var/lib/nerdctl/1935db59"
# bufio.MaxScanTokenSize: nerdctl's env-file reader fails on longer lines.
SCAN_TOKEN_MAX: Final = 64 * 1024

State = dict[str, Any]
Container = dict[str, Any]


class Fatal(Exception):
    """End the invocation with a logrus fatal line and exit status 1."""

    def __init__(self, message: str, *, raw: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.raw = raw  # a verbatim capture to print instead


# --- state -------------------------------------------------------------------


def _paths(state_path: Path) -> tuple[Path, Path]:
    return state_path.with_name(state_path.name + ".lock"), state_path.with_name(
        state_path.name + ".argv.jsonl"
    )


def socket_dir(state_path: Path) -> Path:
    """Where `events` listeners leave a marker file each (``<pid>.listener``).

    The sockets themselves live in Linux's abstract namespace (no file, gone
    with their process, no 108-byte path limit), so nothing is left in /tmp
    by a listener that was killed.
    """
    return state_path.with_name(state_path.name + ".listeners")


def _listener_address(state_path: Path, pid: int | str) -> str:
    digest = zlib.crc32(str(state_path.resolve()).encode())
    return f"\0fake-nerdctl-{digest:08x}-{pid}"


def initial_state() -> State:
    return {
        "containers": [],
        "runtimes": list(DEFAULT_RUNTIMES),
        "missing_images": [],
        "snapshotter_missing": False,
        "log_format": None,
        "events_format": "v2",
        "knobs": [],
        "behaviours": [],
    }


def _load(state_path: Path) -> State:
    with contextlib.suppress(FileNotFoundError):
        data: State = json.loads(state_path.read_text())
        return data
    return initial_state()


def _save(state_path: Path, state: State) -> None:
    tmp = state_path.with_name(state_path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(state_path)


@contextlib.contextmanager
def locked(state_path: Path) -> Iterator[State]:
    """The state, exclusively; saved when the block ends without an error."""
    lock_path, _ = _paths(state_path)
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            state = _load(state_path)
            yield state
            _save(state_path, state)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def snapshot(state_path: Path) -> State:
    lock_path, _ = _paths(state_path)
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)
        try:
            return _load(state_path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _record(state_path: Path, entry: dict[str, Any]) -> None:
    _, log_path = _paths(state_path)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(entry) + "\n").encode())
    finally:
        os.close(fd)


# --- time and text -----------------------------------------------------------


def rfc3339_nano(ns: int | None = None) -> str:
    ns = time.time_ns() if ns is None else ns
    seconds, nanos = divmod(ns, 1_000_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    fraction = f"{nanos:09d}".rstrip("0")
    return f"{stamp}.{fraction}Z" if fraction else f"{stamp}Z"


def human_since(seconds: float) -> str:
    """go-units HumanDuration, as nerdctl ps prints ``Exited (0) 5 seconds ago``."""
    if seconds < 1:
        return "Less than a second"
    if seconds < 60:
        return "1 second" if int(seconds) == 1 else f"{int(seconds)} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600)
    return "About an hour" if hours == 1 else f"{hours} hours"


_GO_ESCAPES: Final = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


def go_quote(text: str) -> str:
    """Go's ``%q`` (strconv.Quote), which logrus uses for values with spaces."""
    out = ['"']
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif char in _GO_ESCAPES:
            out.append(_GO_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


_LOGRUS_BARE: Final = re.compile(r"[A-Za-z0-9\-._/@^+]+")
_TTY_ENTRY: Final = re.compile(r"(PANI|FATA|ERRO|WARN|INFO|DEBU|TRAC)\[([0-9]{4})\] ?(.*)")
_TTY_FIELDS: Final = re.compile(r'(.*?)\s{2,}((?:[\w.-]+=(?:"(?:[^"\\]|\\.)*"|\S+)\s*)+)$')
_LEVELS: Final = {
    "PANI": "panic",
    "FATA": "fatal",
    "ERRO": "error",
    "WARN": "warning",
    "INFO": "info",
    "DEBU": "debug",
    "TRAC": "trace",
}
_TTY_COLOURS: Final = {"FATA": 31, "PANI": 31, "ERRO": 31, "WARN": 33, "INFO": 36}
_PROGRESS: Final = re.compile(r"\|[-+ ]*\|\s*$|^\s*elapsed:")


def _logfmt_value(value: str) -> str:
    return value if _LOGRUS_BARE.fullmatch(value) else go_quote(value)


def logfmt_line(level: str, message: str, fields: str = "") -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    line = f"time={go_quote(stamp)} level={level} msg={_logfmt_value(message)}"
    return f"{line} {fields}" if fields else line


def tty_line(level4: str, message: str) -> str:
    # logrus on a terminal: coloured level, seconds since start, padded message.
    colour = _TTY_COLOURS.get(level4, 37)
    return f"\x1b[{colour}m{level4}\x1b[0m[0000] {message:<44} "


def to_logfmt(text: str) -> str:
    """Rewrite a terminal capture as logrus writes it to a pipe."""
    out: list[str] = []
    entry: list[str] | None = None  # [level4, message, fields]

    def flush() -> None:
        if entry is not None:
            out.append(logfmt_line(_LEVELS[entry[0]], entry[1].rstrip(), entry[2]))

    for line in text.splitlines():
        match = _TTY_ENTRY.match(line)
        if match is not None:
            flush()
            body = match.group(3)
            fields = _TTY_FIELDS.match(body)
            if fields is not None:
                entry = [match.group(1), fields.group(1), fields.group(2).strip()]
            else:
                entry = [match.group(1), body, ""]
        elif entry is not None and not _PROGRESS.search(line):
            entry[1] = entry[1].rstrip() + "\n" + line
        else:
            out.append(line)
    flush()
    return "\n".join(out) + "\n"


# --- images and names ----------------------------------------------------------


def normalize_image(ref: str) -> str:
    """docker.io normalization, as nerdctl stores image names."""
    name, _, digest = ref.partition("@")
    first, _, rest = name.partition("/")
    if not rest or ("." not in first and ":" not in first and first != "localhost"):
        name = f"docker.io/{name}" if rest else f"docker.io/library/{name}"
    last = name.rsplit("/", 1)[-1]
    if ":" not in last and not digest:
        name += ":latest"
    return f"{name}@{digest}" if digest else name


def shim_binary(runtime: str) -> str:
    """containerd's rule: io.containerd.kata.v2 -> containerd-shim-kata-v2."""
    parts = runtime.removeprefix("io.containerd.").split(".")
    return "containerd-shim-" + "-".join(parts)


def _fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def image_not_found_text(image: str) -> str:
    text = _fixture("nerdctl_run_image_not_found_pull_access_denied_with_progress.txt")
    captured = (
        "docker.io/library/sha256:d61d5fd6f4418a52d4cdd28c66b83d11a402870b506347930827f6de7ee1f75c"
    )
    return text.replace(captured, image)


def name_in_use_text(name: str, container_id: str) -> str:
    text = _fixture("nerdctl_run_name_already_used_by_ID_v0.13.txt")
    text = text.replace('"adguardhome"', f'"{name}"')
    return text.replace(
        "a1e09c7badd41dd267050f3edeb16c9d6dabf5762fcbfc481eb1ae01ae34e64d", container_id
    )


def shim_not_installed_text(runtime: str) -> str:
    # containerd's text as ctr printed it; nerdctl wraps the same text.
    text = _fixture("ctr_run_runtime_not_found_kata_shim_binary_not_installed.txt")
    text = text.replace("io.containerd.kata.v2", runtime).replace(
        "containerd-shim-kata-v2", shim_binary(runtime)
    )
    return text.replace("ctr: ", "FATA[0000] failed to create shim task: ", 1)


def snapshotter_text() -> str:
    return _fixture("nerdctl_run_kata_fc_snapshotter_not_loaded_devmapper.txt")


# --- events --------------------------------------------------------------------


def publish(state_path: Path, topic: str, payload: dict[str, Any], container_id: str = "") -> None:
    """Hand one containerd event to every `events` listener."""
    message = json.dumps(
        {
            "ts": time.time_ns(),
            "namespace": NAMESPACE,
            "topic": topic,
            "id": container_id,
            "event": json.dumps(payload, separators=(",", ":")),
        }
    ).encode()
    directory = socket_dir(state_path)
    if not directory.is_dir():
        return
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        sender.setblocking(False)
        for listener in sorted(directory.glob("*.listener")):
            try:
                sender.sendto(message, _listener_address(state_path, listener.stem))
            except (ConnectionRefusedError, FileNotFoundError):
                listener.unlink(missing_ok=True)  # its process is gone
                _remove_if_empty(directory)
            except BlockingIOError:
                pass  # a listener that reads nothing loses events


def _remove_if_empty(directory: Path) -> None:
    """The last listener leaving takes the marker folder along."""
    with contextlib.suppress(OSError):
        directory.rmdir()


def format_event(raw: dict[str, Any], style: str, template: str | None) -> str:
    stamp = rfc3339_nano(int(raw["ts"]))
    if template is None:
        return f"{stamp} {raw['namespace']} {raw['topic']} {raw['event']}\n"
    if style == "v1":  # before nerdctl added ID and Status (2024)
        out: dict[str, Any] = {
            "Timestamp": stamp,
            "Namespace": raw["namespace"],
            "Topic": raw["topic"],
            "Event": raw["event"],
        }
    else:
        status_key = "Action" if style == "v29" else "Status"
        out = {
            "Timestamp": stamp,
            "ID": raw["id"],
            "Namespace": raw["namespace"],
            "Topic": raw["topic"],
            status_key: "start" if "start" in raw["topic"] else "unknown",
            "Event": raw["event"],
        }
    # nerdctl: Fprintln(stdout, rendered + "\n"): every event, then an empty line.
    return json.dumps(out, separators=(",", ":")) + "\n\n"


def _events(ctx: Context, args: list[str]) -> int:
    flags = _parse_flags(args, values={"--format", "-f", "--filter"}, bools=set())
    template = flags.value("--format")
    style = str(snapshot(ctx.state_path).get("events_format") or "v2")
    directory = socket_dir(ctx.state_path)
    directory.mkdir(exist_ok=True)
    path = directory / f"{os.getpid()}.listener"
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(_listener_address(ctx.state_path, os.getpid()))
        path.touch()
        try:
            while True:
                raw = json.loads(listener.recv(1 << 20))
                sys.stdout.write(format_event(raw, style, template))
                sys.stdout.flush()
        except BrokenPipeError:
            return 0
        finally:
            path.unlink(missing_ok=True)
            _remove_if_empty(directory)


# --- argument parsing ------------------------------------------------------------


class Flags:
    def __init__(self, values: dict[str, list[str]], bools: set[str], rest: list[str]) -> None:
        self.values = values
        self.bools = bools
        self.rest = rest

    def value(self, *names: str) -> str | None:
        for name in names:
            if self.values.get(name):
                return self.values[name][-1]
        return None

    def all(self, *names: str) -> list[str]:
        return [v for name in names for v in self.values.get(name, [])]

    def has(self, *names: str) -> bool:
        return any(name in self.bools for name in names)


def _parse_flags(
    args: Sequence[str], *, values: set[str], bools: set[str], interspersed: bool = True
) -> Flags:
    """pflag's rules, as far as the agent uses them: --f v, --f=v, -f v, -abc."""
    found: dict[str, list[str]] = {}
    set_bools: set[str] = set()
    rest: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg == "--":
            rest += args[index:]
            break
        if not arg.startswith("-") or arg == "-":
            rest.append(arg)
            if not interspersed:
                rest += args[index:]
                break
            continue
        name, eq, inline = arg.partition("=")
        if name in values:
            if eq:
                found.setdefault(name, []).append(inline)
            elif index < len(args):
                found.setdefault(name, []).append(args[index])
                index += 1
            else:
                raise Fatal(f"flag needs an argument: {name}")
        elif name in bools:
            set_bools.add(name)
        elif (
            not name.startswith("--") and len(name) > 2 and all(f"-{c}" in bools for c in name[1:])
        ):
            set_bools.update(f"-{c}" for c in name[1:])
        elif name.startswith("--"):
            raise Fatal(f"unknown flag: {name}")
        else:
            raise Fatal(f"unknown shorthand flag: {name[1]!r} in {arg}")
    return Flags(found, set_bools, rest)


# --- the invocation ----------------------------------------------------------------


class Context:
    def __init__(self, state_path: Path, tty: bool) -> None:
        self.state_path = state_path
        self.tty = tty
        self.generic = False  # `nerdctl inspect` rather than `nerdctl container inspect`

    def fatal(self, message: str, *, raw: str | None = None) -> None:
        if raw is not None:
            text = raw if self.tty else to_logfmt(raw)
        elif self.tty:
            lines = message.split("\n")
            text = "\n".join([tty_line("FATA", lines[0]), *lines[1:]]) + "\n"
        else:
            text = logfmt_line("fatal", message) + "\n"
        sys.stderr.write(text)

    def error(self, message: str) -> None:
        if self.tty:
            lines = message.split("\n")
            sys.stderr.write("\n".join([tty_line("ERRO", lines[0]), *lines[1:]]) + "\n")
        else:
            sys.stderr.write(logfmt_line("error", message) + "\n")


def main(argv: Sequence[str]) -> int:
    raw_path = os.environ.get(STATE_ENV)
    if not raw_path:
        sys.stderr.write(f"fake nerdctl: set {STATE_ENV} to a state file\n")
        return 2
    state_path = Path(raw_path)
    args = list(argv)
    if args[:1] == ["__shim__"]:
        return _shim(state_path, args[1:])
    _record(state_path, {"pid": os.getpid(), "argv": ["nerdctl", *args], "start": time.time()})
    forced = snapshot(state_path).get("log_format")
    ctx = Context(state_path, tty=(forced == "tty") if forced else sys.stderr.isatty())
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        code = _dispatch(ctx, args)
    except Fatal as exc:
        ctx.fatal(exc.message, raw=exc.raw)
        code = 1
    except KeyboardInterrupt:
        code = 130
    sys.stdout.flush()
    _record(state_path, {"pid": os.getpid(), "end": time.time(), "rc": code})
    return code


_SUBCOMMANDS: Final = {
    "run": "run",
    "ps": "ps",
    "inspect": "inspect",
    "stop": "stop",
    "rm": "rm",
    "kill": "kill",
    "events": "events",
    "images": "images",
    "rmi": "rmi",
}
_CONTAINER_SUBCOMMANDS: Final = {
    "run": "run",
    "ps": "ps",
    "ls": "ps",
    "list": "ps",
    "inspect": "inspect",
    "stop": "stop",
    "rm": "rm",
    "remove": "rm",
    "kill": "kill",
}


def _dispatch(ctx: Context, args: list[str]) -> int:
    index = 0
    while index < len(args) and args[index].startswith("-"):
        flag = args[index]
        if flag in ("--version", "-v"):
            _apply_knobs(ctx, "version", args)
            print(VERSION_LINE)
            return 0
        if flag in ("-n", "--namespace", "-a", "--address", "-H", "--host"):
            index += 2
        elif flag.split("=")[0] in ("--namespace", "--address", "--host") or flag == "--debug":
            index += 1
        else:
            raise Fatal(f"unknown flag: {flag}")
    if index >= len(args):
        print("nerdctl is a command line interface for containerd")
        return 0
    command, rest = args[index], args[index + 1 :]
    if command == "container" and rest:
        op = _CONTAINER_SUBCOMMANDS.get(rest[0])
        rest = rest[1:]
    else:
        op = _SUBCOMMANDS.get(command)
        ctx.generic = command == "inspect"
    if op is None:
        raise Fatal(f'unknown subcommand "{command}" for "nerdctl"')
    _apply_knobs(ctx, op, args)
    handler = {
        "run": _run,
        "ps": _ps,
        "inspect": _inspect,
        "stop": _stop,
        "rm": _rm,
        "kill": _kill,
        "events": _events,
        "images": _images,
        "rmi": _rmi,
    }[op]
    return handler(ctx, rest)


def _images_module() -> Any:
    """fake_images.py, imported the way this module was (launcher or package)."""
    import importlib

    package = "" if __name__ == "fake_nerdctl" else "tests.fakes.nerdctl."
    return importlib.import_module(package + "fake_images")


def _images(ctx: Context, args: list[str]) -> int:
    return int(_images_module().images_command(ctx, args))


def _rmi(ctx: Context, args: list[str]) -> int:
    return int(_images_module().rmi_command(ctx, args))


def _apply_knobs(ctx: Context, op: str, args: Sequence[str]) -> None:
    joined = " ".join(args)
    chosen: list[dict[str, Any]] = []
    with locked(ctx.state_path) as state:
        kept: list[dict[str, Any]] = []
        for knob in state["knobs"]:
            match = knob.get("match")
            if knob["op"] == op and (match is None or match in joined):
                chosen.append(dict(knob))
                if knob.get("times") is not None:
                    knob["times"] -= 1
                    if knob["times"] <= 0:
                        continue
            kept.append(knob)
        state["knobs"] = kept
    for knob in chosen:
        if knob["action"] == "delay":
            time.sleep(float(knob["seconds"]))
        elif knob["action"] == "fail":
            sys.stdout.write(knob.get("stdout", ""))
            stderr = str(knob.get("stderr", ""))
            if knob.get("convert", True) and not ctx.tty:
                stderr = to_logfmt(stderr)
            sys.stderr.write(stderr)
            sys.stdout.flush()
            sys.stderr.flush()
            code = int(knob.get("rc", 1))
            _record(ctx.state_path, {"pid": os.getpid(), "end": time.time(), "rc": code})
            os._exit(code)


# --- run -------------------------------------------------------------------------

_RUN_VALUES: Final = {
    "--runtime",
    "--name",
    "--label",
    "-l",
    "--device",
    "--env-file",
    "-e",
    "--env",
    "--pull",
    "--restart",
    "--net",
    "--network",
    "--platform",
    "--entrypoint",
    "-w",
    "--workdir",
    "-u",
    "--user",
}
_RUN_BOOLS: Final = {"-d", "--detach", "--rm", "-i", "--interactive", "-t", "--tty", "--privileged"}


def _go_trim_space(text: str) -> str:
    # Go's strings.TrimSpace: Unicode White_Space, which str.strip() also covers.
    return text.strip(
        " \t\n\v\f\r\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
        "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
    )


def parse_env_file(data: bytes) -> list[str]:
    """nerdctl's parseEnvVars + withOSEnv: what the container's environment gets."""
    out: list[str] = []
    for raw_line in data.split(b"\n"):
        if len(raw_line) + 1 > SCAN_TOKEN_MAX:
            raise Fatal("bufio.Scanner: token too long")
        line = _go_trim_space(raw_line.removesuffix(b"\r").decode("utf-8", "replace"))
        if not line or line.startswith("#"):
            continue
        key, eq, _ = line.partition("=")
        if not key:
            raise Fatal("invalid environment variable: " + line)
        if not eq and key in os.environ:
            line = f"{key}={os.environ[key]}"
        out.append(line)
    return out


def _run(ctx: Context, args: list[str]) -> int:
    flags = _parse_flags(args, values=_RUN_VALUES, bools=_RUN_BOOLS, interspersed=False)
    if not flags.rest:
        raise Fatal('"nerdctl run" requires at least 1 argument.')
    if not flags.has("-d", "--detach"):
        raise Fatal("this fake nerdctl runs detached containers only (-d)")
    image_ref, command = flags.rest[0], flags.rest[1:]
    image = normalize_image(image_ref)
    runtime = flags.value("--runtime") or "io.containerd.runc.v2"
    state = snapshot(ctx.state_path)
    if state.get("pull_progress_bytes"):
        _show_pull_progress(int(state["pull_progress_bytes"]))
    if image in state["missing_images"] or image_ref in state["missing_images"]:
        sys.stderr.write(
            image_not_found_text(image) if ctx.tty else to_logfmt(image_not_found_text(image))
        )
        return 1
    if state["snapshotter_missing"]:
        raise Fatal("", raw=snapshotter_text())
    env: list[str] = []
    env_modes: list[str] = []
    for path in flags.all("--env-file"):
        try:
            env_modes.append(oct(os.stat(path).st_mode & 0o777))
            data = Path(path).read_bytes()
        except OSError:
            raise Fatal(
                f"failed to open env file {path}: open {path}: no such file or directory"
            ) from None
        env += parse_env_file(data)
    env += flags.all("-e", "--env")
    labels: dict[str, str] = {}
    for label in flags.all("--label", "-l"):
        key, _, value = label.partition("=")
        labels[key] = value
    container_id = os.urandom(32).hex()
    name = flags.value("--name") or f"{image.rsplit('/', 1)[-1].split(':')[0]}-{container_id[:5]}"
    with locked(ctx.state_path) as state:
        for other in state["containers"]:
            if other["name"] == name:
                raise Fatal("", raw=name_in_use_text(name, other["id"]))
        installed = runtime in state["runtimes"]
        record: Container = {
            "id": container_id,
            "name": name,
            "image": image,
            "command": command or ["sleep", "infinity"],
            "labels": labels,
            "runtime": runtime,
            "devices": flags.all("--device"),
            "env": env,
            "env_file_modes": env_modes,
            "created": rfc3339_nano(),
            "status": "created",
            "exit_code": 0,
            "pid": 0,
            "started_at": "",
            "finished_at": "",
            "generation": 0,
            "shim_pid": None,
            "ip": f"10.4.0.{len(state['containers']) % 250 + 2}",
        }
        state["containers"].append(record)
        _pulled(state, image)
        if installed:
            _start(record)
        behaviour = _behaviour(state, record, "exit_after")
    publish(ctx.state_path, "/containers/create", _create_payload(record), container_id)
    if not installed:
        # nerdctl leaves the created container behind, holding its name.
        raise Fatal("", raw=shim_not_installed_text(runtime))
    publish(
        ctx.state_path,
        "/tasks/create",
        {
            "container_id": container_id,
            "bundle": f"/run/containerd/io.containerd.runtime.v2.task/{NAMESPACE}/{container_id}",
            "pid": record["pid"],
        },
        container_id,
    )
    publish(
        ctx.state_path,
        "/tasks/start",
        {"container_id": container_id, "pid": record["pid"]},
        container_id,
    )
    if behaviour is not None and behaviour.get("exit_after") is not None:
        _spawn_shim(
            ctx.state_path, record, float(behaviour["exit_after"]), int(behaviour.get("code", 0))
        )
    print(container_id)
    return 0


def _pulled(state: State, image: str) -> None:
    _images_module().pulled(state, image)


def _show_pull_progress(total: int) -> None:
    """What a long pull prints: nerdctl redraws its progress table every 100 ms,
    whether or not stderr is a terminal (lines from a real capture)."""
    capture = _fixture("nerdctl_run_kata_cgroup_permission_denied_with_pull_progress.txt")
    table = "".join(line + "\n" for line in capture.splitlines() if not line.startswith("FATA"))
    written = 0
    while written < total:
        sys.stderr.write(table)
        written += len(table)
    sys.stderr.flush()


def _start(record: Container) -> None:
    record["status"] = "running"
    record["pid"] = 1000 + int.from_bytes(os.urandom(3), "big") % 400000
    record["started_at"] = rfc3339_nano()
    record["finished_at"] = ""
    record["exit_code"] = 0
    record["generation"] = int(record.get("generation", 0)) + 1


def _behaviour(state: State, record: Container, kind: str) -> dict[str, Any] | None:
    for item in state["behaviours"]:
        match = item.get("match")
        if kind not in item:
            continue
        if match is None or match in record["name"] or match in record["image"]:
            return dict(item)
    return None


def _create_payload(record: Container) -> dict[str, Any]:
    return {
        "id": record["id"],
        "image": record["image"],
        "runtime": {"name": record["runtime"]},
    }


def _spawn_shim(state_path: Path, record: Container, after: float, code: int) -> None:
    import subprocess

    process = subprocess.Popen(
        [
            sys.executable,
            str(LAUNCHER),
            "__shim__",
            record["id"],
            str(after),
            str(code),
            str(record["generation"]),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    with locked(state_path) as state:
        for item in state["containers"]:
            if item["id"] == record["id"]:
                item["shim_pid"] = process.pid


def _shim(state_path: Path, args: list[str]) -> int:
    """A container's process that ends by itself after a while."""
    container_id, after, code, generation = args[0], float(args[1]), int(args[2]), int(args[3])
    time.sleep(after)
    exit_container(state_path, container_id, code, generation=generation)
    return 0


def exit_container(state_path: Path, ref: str, code: int, *, generation: int | None = None) -> bool:
    """The container's main process ended with ``code`` (if it was running)."""
    with locked(state_path) as state:
        record = _find_one(state, ref)
        if record is None or record["status"] != "running":
            return False
        if generation is not None and record["generation"] != generation:
            return False
        _mark_exited(record, code)
    publish(state_path, "/tasks/exit", _exit_payload(record), record["id"])
    return True


def _mark_exited(record: Container, code: int) -> None:
    record["status"] = "exited"
    record["exit_code"] = code
    record["finished_at"] = rfc3339_nano()


def _exit_payload(record: Container) -> dict[str, Any]:
    seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
    payload: dict[str, Any] = {
        "container_id": record["id"],
        "id": record["id"],
        "pid": record["pid"],
        "exit_status": record["exit_code"],
        "exited_at": {"seconds": seconds, "nanos": nanos},
    }
    if not payload["exit_status"]:
        del payload["exit_status"]  # protobuf omitempty: a clean exit has none
    return payload


# --- lookups ---------------------------------------------------------------------


def _find(state: State, ref: str) -> list[Container]:
    """nerdctl's container walker: exact name, or id prefix."""
    return [c for c in state["containers"] if c["name"] == ref or c["id"].startswith(ref)]


def _find_one(state: State, ref: str) -> Container | None:
    found = _find(state, ref)
    return found[0] if len(found) == 1 else None


def _walk_errors(state: State, refs: Sequence[str]) -> tuple[list[Container], list[str]]:
    found: list[Container] = []
    errors: list[str] = []
    for ref in refs:
        matches = _find(state, ref)
        if not matches:
            errors.append(f"no such container: {ref}")
        elif len(matches) > 1:
            errors.append(f"multiple IDs found with provided prefix: {ref}")
        else:
            found.append(matches[0])
    return found, errors


def _errors_text(errors: Sequence[str]) -> str:
    return f"{len(errors)} errors:\n" + "\n".join(errors)


# --- ps ----------------------------------------------------------------------------


def internal_labels(record: Container) -> dict[str, str]:
    """nerdctl's own labels: several hold JSON, with commas, in their values."""
    state_dir = f"{DATA_ROOT}/containers/{NAMESPACE}/{record['id']}"
    devices = [
        {"PathOnHost": d, "PathInContainer": d, "CgroupPermissions": "rwm"}
        for d in record["devices"]
    ]
    return {
        "io.containerd.image.config.stop-signal": "SIGTERM",
        "nerdctl/auto-remove": "false",
        "nerdctl/dns": '{"DNSServers":null,"DNSResolvConfOptions":null,"DNSSearchDomains":null}',
        "nerdctl/extraHosts": "[]",
        "nerdctl/host-config": json.dumps(
            {"BlkioWeight": 0, "CidFile": "", "Devices": devices or None}, separators=(",", ":")
        ),
        "nerdctl/hostname": record["id"][:12],
        "nerdctl/ipc": '{"mode":"private"}',
        "nerdctl/log-config": '{"driver":"json-file","address":"/run/containerd/containerd.sock"}',
        "nerdctl/log-uri": "binary:///usr/local/bin/nerdctl?_NERDCTL_INTERNAL_LOGGING=%2Fvar%2Flib%2Fnerdctl%2F1935db59",
        "nerdctl/name": record["name"],
        "nerdctl/namespace": NAMESPACE,
        "nerdctl/networks": '["bridge"]',
        "nerdctl/platform": "linux/amd64",
        "nerdctl/ports": (
            '[{"HostPort":8080,"ContainerPort":80,"Protocol":"tcp","HostIP":"0.0.0.0"}]'
        ),
        "nerdctl/state-dir": state_dir,
    }


def all_labels(record: Container) -> dict[str, str]:
    return {**internal_labels(record), **record["labels"]}


def ps_status(record: Container) -> str:
    status = str(record["status"])
    if status == "running":
        return "Up"
    if status == "exited":
        finished = _parse_time(record["finished_at"])
        return f"Exited ({record['exit_code']}) {human_since(time.time() - finished)} ago"
    return status.capitalize()


def _parse_time(stamp: str) -> float:
    if not stamp:
        return time.time()
    base, _, fraction = stamp.rstrip("Z").partition(".")
    seconds = time.mktime(time.strptime(base, "%Y-%m-%dT%H:%M:%S")) - time.timezone
    return seconds + (float(f"0.{fraction}") if fraction else 0.0)


def ps_line(record: Container, *, no_trunc: bool) -> dict[str, Any]:
    command = '"' + " ".join(record["command"]) + '"'
    if not no_trunc and len(command) > 20:
        command = command[:19] + "…"
    labels = list(all_labels(record).items())
    import random

    random.shuffle(labels)  # Go map order
    return {
        "Command": command,
        "CreatedAt": record["created"],
        "ID": record["id"] if no_trunc else record["id"][:12],
        "Image": record["image"],
        "Platform": "linux/amd64",
        "Names": record["name"],
        "Ports": "0.0.0.0:8080->80/tcp" if record["status"] == "running" else "",
        "Status": ps_status(record),
        "Runtime": record["runtime"],
        "Size": "",
        "Labels": ",".join(f"{k}={v}" for k, v in labels),
    }


def _ps_filter(spec: str) -> Any:
    kind, eq, value = spec.partition("=")
    if not eq:
        raise Fatal(
            f'invalid argument "{kind}" for "-f, --filter": '
            "bad format of filter (expected name=value)"
        )
    if kind == "label":
        key, has_value, want = value.partition("=")

        def by_label(record: Container) -> bool:
            labels = all_labels(record)
            return key in labels and (not has_value or labels[key] == want)

        return by_label
    if kind == "name":
        return lambda record: value in record["name"]
    if kind == "id":
        return lambda record: bool(value) and record["id"].startswith(value)
    if kind == "status":
        return lambda record: record["status"] == value
    raise Fatal(f"invalid filter '{spec}'")


def _ps(ctx: Context, args: list[str]) -> int:
    flags = _parse_flags(
        args,
        values={"--format", "-f", "--filter"},
        bools={"-a", "--all", "--no-trunc", "-q", "--quiet", "-s", "--size"},
    )
    checks = [_ps_filter(spec) for spec in flags.all("-f", "--filter")]
    everything = flags.has("-a", "--all")
    no_trunc = flags.has("--no-trunc")
    records = [
        r
        for r in reversed(snapshot(ctx.state_path)["containers"])
        if (everything or r["status"] == "running") and all(check(r) for check in checks)
    ]
    template = flags.value("--format")
    for record in records:
        if flags.has("-q", "--quiet"):
            print(record["id"] if no_trunc else record["id"][:12])
        elif template in ("{{json .}}", "json"):
            print(
                json.dumps(
                    ps_line(record, no_trunc=no_trunc), ensure_ascii=False, separators=(",", ":")
                )
            )
        else:
            line = ps_line(record, no_trunc=no_trunc)
            print(
                f"{line['ID']:<16}{line['Image']:<34}{line['Command']:<24}{line['Status']:<28}{line['Names']}"
            )
    return 0


# --- inspect -----------------------------------------------------------------------


def inspect_object(record: Container) -> dict[str, Any]:
    """The docker-compatible object, shaped after a real capture (Kata container)."""
    template = json.loads(_fixture("nerdctl_inspect_kata_runtime_container_nym.json"))[0]
    obj: dict[str, Any] = template
    cid = record["id"]
    state_dir = f"{DATA_ROOT}/containers/{NAMESPACE}/{cid}"
    running = record["status"] == "running"
    obj["Id"] = cid
    obj["Created"] = record["created"]
    obj["Path"] = record["command"][0]
    obj["Args"] = record["command"][1:]
    if record["status"] == "created":
        # No task: nerdctl fills nothing in (older versions print null).
        obj["State"] = {
            "Status": "",
            "Running": False,
            "Paused": False,
            "Restarting": False,
            "Pid": 0,
            "ExitCode": 0,
            "Error": "",
            "StartedAt": "",
            "FinishedAt": "",
        }
    else:
        obj["State"] = {
            "Status": record["status"],
            "Running": running,
            "Paused": record["status"] == "paused",
            "Restarting": False,
            "Pid": record["pid"],
            "ExitCode": record["exit_code"] if record["status"] == "exited" else 0,
            "Error": "",
            "StartedAt": record["started_at"],
            "FinishedAt": record["finished_at"],
        }
    obj["Image"] = record["image"]
    obj["ResolvConfPath"] = f"{state_dir}/resolv.conf"
    obj["HostnamePath"] = f"{state_dir}/hostname"
    obj["HostsPath"] = f"{DATA_ROOT}/etchosts/{NAMESPACE}/{cid}/hosts"
    obj["LogPath"] = f"{state_dir}/{cid}-json.log"
    obj["Name"] = record["name"]
    host = obj["HostConfig"]
    host["PortBindings"] = {}
    host["Runtime"] = record["runtime"]
    host["Devices"] = [
        {"PathOnHost": d, "PathInContainer": d, "CgroupPermissions": "rwm"}
        for d in record["devices"]
    ] or None
    obj["Mounts"] = []
    config = obj["Config"]
    config["Hostname"] = cid[:12]
    config["Env"] = [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        *record["env"],
        f"HOSTNAME={cid[:12]}",
    ]
    config["Image"] = record["image"]
    config["Labels"] = all_labels(record)
    if record["status"] == "created":
        obj["NetworkSettings"] = None
    else:
        networks = obj["NetworkSettings"]
        networks["Ports"] = {}
        if running:
            for settings in [networks, *networks["Networks"].values()]:
                if settings.get("IPAddress"):
                    settings["IPAddress"] = record["ip"]
        else:
            networks.update({"IPAddress": "", "IPPrefixLen": 0, "MacAddress": "", "Networks": {}})
    return obj


def _inspect(ctx: Context, args: list[str]) -> int:
    flags = _parse_flags(
        args, values={"--format", "-f", "--mode", "--type"}, bools={"-s", "--size"}
    )
    if not flags.rest:
        raise Fatal('"nerdctl inspect" requires at least 1 argument.')
    state = snapshot(ctx.state_path)
    found, errors = _walk_errors(state, flags.rest)
    if ctx.generic:
        errors = [e.replace("no such container: ", "no such object: ") for e in errors]
    if found:
        sys.stdout.write(
            json.dumps([inspect_object(r) for r in found], indent=4, ensure_ascii=False) + "\n"
        )
    if errors:
        raise Fatal(_errors_text(errors))
    return 0


# --- stop and rm -------------------------------------------------------------------


def _stop(ctx: Context, args: list[str]) -> int:
    flags = _parse_flags(args, values={"-t", "--time", "-s", "--signal"}, bools=set())
    grace = int(flags.value("-t", "--time") or 10)
    with locked(ctx.state_path) as state:
        found, errors = _walk_errors(state, flags.rest)
        stubborn = {
            r["id"]
            for r in found
            if any(
                b.get("ignore_sigterm") and (b.get("match") is None or b["match"] in r["name"])
                for b in state["behaviours"]
            )
        }
    for record in found:
        if record["status"] == "running":
            code = 0
            if record["id"] in stubborn:
                time.sleep(grace)  # PID 1 without a SIGTERM handler: only SIGKILL ends it
                code = 137
            if exit_container(ctx.state_path, record["id"], code):
                _kill_shim(record)
        print(record["name"] if record["name"] in flags.rest else record["id"][:12])
    if errors:
        raise Fatal(_errors_text(errors))
    return 0


# Linux numbers of the signals `kill -s` is given by name.
_SIGNAL_NUMBERS: Final = {
    "HUP": 1,
    "INT": 2,
    "QUIT": 3,
    "KILL": 9,
    "USR1": 10,
    "SEGV": 11,
    "USR2": 12,
    "TERM": 15,
}


def _kill(ctx: Context, args: list[str]) -> int:
    """``nerdctl kill [-s SIGNAL] CONTAINER...``: the main process dies of the signal."""
    flags = _parse_flags(args, values={"-s", "--signal"}, bools=set())
    raw = (flags.value("-s", "--signal") or "KILL").upper().removeprefix("SIG")
    number = int(raw) if raw.isdigit() else _SIGNAL_NUMBERS.get(raw)
    if number is None:
        raise Fatal(f"unknown signal: {raw}")
    with locked(ctx.state_path) as state:
        found, errors = _walk_errors(state, flags.rest)
    for record in found:
        if record["status"] != "running":
            errors.append(f"cannot kill container {record['id']}: container is not running")
            continue
        if exit_container(ctx.state_path, record["id"], 128 + number):
            _kill_shim(record)
        print(record["name"] if record["name"] in flags.rest else record["id"][:12])
    if errors:
        raise Fatal(_errors_text(errors))
    return 0


def _rm(ctx: Context, args: list[str]) -> int:
    flags = _parse_flags(args, values=set(), bools={"-f", "--force", "-v", "--volumes"})
    force = flags.has("-f", "--force")
    events: list[tuple[str, dict[str, Any], str]] = []
    with locked(ctx.state_path) as state:
        found, errors = _walk_errors(state, flags.rest)
        for record in found:
            if record["status"] in ("running", "paused") and not force:
                errors.append(
                    f"container {record['id']} is in {record['status']} status. "
                    "unpause/stop container first or force removal"
                )
                continue
            if record["status"] == "running":
                _mark_exited(record, 137)
                events.append(("/tasks/exit", _exit_payload(record), record["id"]))
            if record["status"] != "created":
                payload = _exit_payload(record)
                events.append(("/tasks/delete", payload, record["id"]))
            events.append(("/containers/delete", {"id": record["id"]}, record["id"]))
            state["containers"] = [c for c in state["containers"] if c["id"] != record["id"]]
            _kill_shim(record)
            print(record["name"] if record["name"] in flags.rest else record["id"][:12])
    for topic, payload, cid in events:
        publish(ctx.state_path, topic, payload, cid)
    if errors:
        if force:
            ctx.error(_errors_text(errors))
            return 0
        raise Fatal(_errors_text(errors))
    return 0


def _kill_shim(record: Container) -> None:
    if record.get("shim_pid"):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(int(record["shim_pid"]), signal.SIGKILL)


# --- control, for tests and benchmarks ----------------------------------------------


class Call(NamedTuple):
    pid: int
    argv: list[str]
    start: float
    end: float | None
    rc: int | None

    @property
    def op(self) -> str:
        words = [a for a in self.argv[1:] if not a.startswith("-")]
        if words[:1] == ["container"]:
            words = words[1:]
        return words[0] if words else self.argv[1] if len(self.argv) > 1 else ""


class FakeNerdctl:
    """A fake nerdctl installation: its executable, its state and knobs.

    Processes inherit ``$FAKE_NERDCTL_STATE`` from the test's environment
    (set it with :meth:`environ`).
    """

    executable: Path = LAUNCHER

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.state_path = root / "nerdctl-state.json"
        if not self.state_path.exists():
            with locked(self.state_path) as state:
                state.update(initial_state())

    def environ(self) -> dict[str, str]:
        return {STATE_ENV: str(self.state_path)}

    # --- knobs ----------------------------------------------------------

    def set(self, key: str, value: Any) -> None:
        """runtimes, missing_images, snapshotter_missing, log_format, events_format,
        pull_progress_bytes (progress output `run` prints first)."""
        with locked(self.state_path) as state:
            state[key] = value

    def delay(
        self, op: str, seconds: float, *, match: str | None = None, times: int | None = None
    ) -> None:
        """Make ``op`` (run, ps, inspect, stop, rm, events, version) wait, or hang."""
        self._knob(
            {"op": op, "action": "delay", "seconds": seconds, "match": match, "times": times}
        )

    def fail(
        self,
        op: str,
        stderr: str,
        *,
        rc: int = 1,
        stdout: str = "",
        match: str | None = None,
        times: int | None = None,
        convert: bool = True,
    ) -> None:
        """Make ``op`` print ``stderr`` (a terminal capture, rewritten for a pipe
        unless ``convert`` is false) and exit ``rc``."""
        self._knob(
            {
                "op": op,
                "action": "fail",
                "stderr": stderr,
                "rc": rc,
                "stdout": stdout,
                "match": match,
                "times": times,
                "convert": convert,
            }
        )

    def exit_after(self, match: str, seconds: float, code: int) -> None:
        """Containers whose name or image contains ``match`` end by themselves."""
        self._behaviour({"match": match, "exit_after": seconds, "code": code})

    def ignore_sigterm(self, match: str) -> None:
        """Containers named like ``match`` only die at the SIGKILL after the grace."""
        self._behaviour({"match": match, "ignore_sigterm": True})

    def _knob(self, knob: dict[str, Any]) -> None:
        with locked(self.state_path) as state:
            state["knobs"].append(knob)

    def _behaviour(self, item: dict[str, Any]) -> None:
        with locked(self.state_path) as state:
            state["behaviours"].append(item)

    # --- what happened --------------------------------------------------

    def containers(self) -> list[Container]:
        return list(snapshot(self.state_path)["containers"])

    def add_image(self, ref: str, size_bytes: int, *, created: float | None = None) -> None:
        """An image the engine holds, as if pulled earlier."""
        with locked(self.state_path) as state:
            _images_module().add_image(state, ref, size_bytes, created)

    def images(self) -> list[str]:
        """The normalized names of the images held."""
        return [i["name"] for i in snapshot(self.state_path).get("images", [])]

    def container(self, ref: str) -> Container | None:
        return _find_one(snapshot(self.state_path), ref)

    def exit(self, ref: str, code: int) -> bool:
        """The container's main process ends with ``code`` now."""
        return exit_container(self.state_path, ref, code)

    def oom(self, ref: str) -> bool:
        """The container's VM runs out of memory: ``/tasks/oom``, then it exits 137."""
        record = self.container(ref)
        if record is None or record["status"] != "running":
            return False
        publish(self.state_path, "/tasks/oom", {"container_id": record["id"]}, record["id"])
        return exit_container(self.state_path, ref, 137)

    def remove_behind_back(self, ref: str) -> bool:
        """``nerdctl rm -f`` run by someone else (an operator, a cleanup script)."""
        return self.cli("rm", "-f", ref).returncode == 0 and self.container(ref) is None

    def revive(self, ref: str) -> None:
        """Start an exited container again (as `nerdctl start` would)."""
        with locked(self.state_path) as state:
            record = _find_one(state, ref)
            if record is None:
                raise KeyError(ref)
            _start(record)
        publish(
            self.state_path,
            "/tasks/start",
            {"container_id": record["id"], "pid": record["pid"]},
            record["id"],
        )

    def calls(self) -> list[Call]:
        _, log_path = _paths(self.state_path)
        starts: dict[int, dict[str, Any]] = {}
        ends: dict[int, dict[str, Any]] = {}
        if log_path.exists():
            for line in log_path.read_text(errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue  # a line a full disk or a kill cut short
                (starts if "argv" in entry else ends)[entry["pid"]] = entry
        return [
            Call(
                pid,
                list(entry["argv"]),
                float(entry["start"]),
                ends.get(pid, {}).get("end"),
                ends.get(pid, {}).get("rc"),
            )
            for pid, entry in sorted(starts.items(), key=lambda item: item[1]["start"])
        ]

    def cli(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run the fake directly, as an operator would."""
        import subprocess

        return subprocess.run(
            [str(self.executable), *args],
            env={**os.environ, **self.environ()},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def close(self) -> None:
        """Kill the helper processes of timed exits; remove stale listener markers."""
        for record in self.containers():
            _kill_shim(record)
        directory = socket_dir(self.state_path)
        if directory.is_dir():
            for listener in directory.glob("*.listener"):
                pid = listener.stem
                if pid.isdigit() and not _alive(int(pid)):
                    listener.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                directory.rmdir()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
