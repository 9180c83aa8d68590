"""Replica containers through a container engine: one Kata micro-VM per container.

:class:`EngineRuntime` is the :class:`~vectorlay.ports.Runtime` port, on
nerdctl (the default), Docker or Podman; what differs between them comes
from the engine's :class:`~vectorlay.adapters.runtime.dialect.Dialect`
(:mod:`.nerdctl`, :mod:`.docker`, :mod:`.podman`).  ``NerdctlRuntime`` is
the same class under its former name.  Every
call runs as an argv list from :mod:`~vectorlay.adapters.runtime.argv`, never
through a shell, through :func:`~vectorlay.adapters.commands.run_command`:
with a timeout after which the call and everything it started are killed.

- :meth:`EngineRuntime.run` passes env values through a private env file
  (:mod:`~vectorlay.adapters.runtime.envfile`), never on argv.
- :meth:`EngineRuntime.list` finds managed containers with ``ps`` and reads
  their labels from ``inspect --type container`` (a JSON object).
- :meth:`EngineRuntime.changes` follows the engine's ``events``
  (:mod:`~vectorlay.adapters.runtime.events`) and yields when a managed
  container starts, exits or goes away; or polls ``ps``.

The engine runs in the env directory: conmon (Podman) drops an ``oom``
marker file into the working directory of whoever ran it.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

import anyio

from vectorlay.adapters.commands import run_command
from vectorlay.adapters.runtime.argv import (
    CONTAINER_ID_RE,
    check_replica,
    check_spec,
    events_argv,
    grace_seconds,
    inspect_argv,
    ps_argv,
    rm_argv,
    run_argv,
    stop_argv,
)
from vectorlay.adapters.runtime.engines import DEFAULT_ENGINE, default_oci_runtime, load_dialect
from vectorlay.adapters.runtime.envfile import (
    check_env_dir,
    env_file,
    env_file_bytes,
    prepare_env_dir,
)
from vectorlay.adapters.runtime.events import event_changes
from vectorlay.adapters.runtime.nerdctl import ps_status_key
from vectorlay.adapters.runtime.oomkills import OomKills
from vectorlay.adapters.runtime.output import Listed, one_per_replica, parse_inspect, printed_id
from vectorlay.adapters.runtime.stderr import clip, failure, worded_for_result
from vectorlay.domain.agent.replicas import ContainerSpec, ContainerState, container_name
from vectorlay.domain.messages import ReplicaStatus
from vectorlay.errors import (
    ConfigError,
    ContainerRuntimeError,
    NameInUse,
    RuntimeNotInstalled,
    RuntimeTimeout,
)

log = logging.getLogger(__name__)

INSPECT_OUTPUT_LIMIT: Final = 64 * 1024 * 1024
STDOUT_LIMIT: Final = 1024 * 1024
# `nerdctl run` redraws its pull progress every 100 ms for as long as a pull
# takes, terminal or not: of stderr only the end (where the error is) is kept.
STDERR_TAIL: Final = 64 * 1024

Watch = Literal["events", "poll"]
# Aliases for annotations inside EngineRuntime, whose list() hides the builtin.
Argv = list[str]
ListedItems = list[Listed]


@dataclass(frozen=True, slots=True)
class _Output:
    returncode: int
    stdout: str
    stderr: str


@dataclass
class _ReplicaLock:
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    users: int = 0


class EngineRuntime:
    """The :class:`~vectorlay.ports.Runtime` port on nerdctl, Docker or Podman.

    ``engine`` names the engine (:data:`~.engines.ENGINES`) and ``cli`` the
    command that drives it (the engine's name on ``PATH`` by default;
    ``nerdctl`` is its former name).  ``oci_runtime`` defaults per engine
    (:data:`~.engines.DEFAULT_OCI_RUNTIMES`).

    ``call_timeout`` bounds ``ps``, ``inspect`` and ``rm``; ``run_timeout``
    bounds ``run`` (it pulls the image); ``stop`` gets ``grace`` plus
    ``call_timeout``.  At most ``max_concurrency`` runs and stops proceed at
    once, and the calls for one replica are serialized; listing has its own
    lane, so a slow image pull never delays exit detection.  ``watch``
    picks how :meth:`changes` learns of exits: ``"events"`` (default) or
    ``"poll"`` (``ps`` every ``poll_interval`` seconds).
    """

    def __init__(
        self,
        *,
        engine: str = DEFAULT_ENGINE,
        cli: str | None = None,
        nerdctl: str | None = None,
        oci_runtime: str | None = None,
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
        try:
            self._dialect = load_dialect(engine)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        command = cli if cli is not None else nerdctl if nerdctl is not None else engine
        if not command:
            raise ConfigError(f"{engine} path must not be empty")
        if os.sep in command:
            # The engine runs in the env directory: a relative path must not move with it.
            command = os.path.abspath(command)
        if oci_runtime is None:
            oci_runtime = default_oci_runtime(engine)
        if not oci_runtime or oci_runtime.startswith("-") or any(c.isspace() for c in oci_runtime):
            raise ConfigError(f"not an OCI runtime name: {oci_runtime!r}")
        if engine == "podman" and "kata" in oci_runtime:
            log.warning(
                "podman runs Kata 1.x only (Kata >= 2 has no OCI command line for it); "
                "for Kata micro-VMs use --engine nerdctl or docker"
            )
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
        check_env_dir(env_dir)
        self._nerdctl = command
        self._engine = engine
        self._oci_runtime = oci_runtime
        self._env_dir = prepare_env_dir(env_dir)
        self._cwd = str(self._env_dir)
        self._call_timeout = call_timeout
        self._run_timeout = run_timeout
        self._watch: Watch = watch
        self._poll_interval = poll_interval
        self._restart_delay = events_restart_delay
        self._restart_cap = max(events_restart_cap, events_restart_delay)
        self._settle = max(events_settle, 0.0)
        self._debounce = max(debounce, 0.0)
        self._call_limiter = anyio.CapacityLimiter(max_concurrency)
        self._replica_locks: dict[str, _ReplicaLock] = {}
        self._list_lock = anyio.Lock()
        # Container ids worth waking the agent for; kept by list() and run().
        self._known_ids: set[str] = set()
        self._starting = 0
        self._oom_kills = OomKills()

    # --- the port ----------------------------------------------------------

    async def run(self, spec: ContainerSpec) -> ContainerState:
        check_spec(spec)
        env_data = env_file_bytes(spec.env) if spec.env else None
        async with self._exclusive(spec.replica_id):
            try:
                output = await self._run_container(spec, env_data)
                if output.returncode != 0:
                    raise worded_for_result(self._failure(output, spec.env.values()), spec)
            except ContainerRuntimeError as exc:
                if not isinstance(exc, NameInUse):
                    # A failed run may leave a created container that holds
                    # the name (and the GPUs the agent is about to free).
                    await self._discard(spec.name)
                raise
            container_id = printed_id(output.stdout)
            if CONTAINER_ID_RE.fullmatch(container_id):
                self._known_ids.add(container_id)
            return await self._started_state(spec, container_id)

    async def stop(self, replica_id: str, *, grace: float) -> None:
        check_replica(replica_id)
        name = container_name(replica_id)
        async with self._exclusive(replica_id):
            try:
                output = await self._call(
                    stop_argv(self._nerdctl, name, grace),
                    # nerdctl waits the whole grace before its SIGKILL.
                    timeout=grace_seconds(grace) + self._call_timeout,
                    what=f"stop {name}",
                )
                if output.returncode != 0 and not self._dialect.no_such_container(output.stderr):
                    log.warning(
                        "%s stop %s: %s; removing it by force",
                        self._engine,
                        name,
                        self._failure(output),
                    )
            except RuntimeTimeout as exc:
                log.warning("%s; removing it by force", exc)
            output = await self._call(
                rm_argv(self._nerdctl, name), timeout=self._call_timeout, what=f"rm {name}"
            )
            # With -f, nerdctl (and Docker on a missing container) exits 0
            # even when removal failed: read its log.
            failed = output.returncode != 0 or self._error_message(output) is not None
            if failed and not self._dialect.no_such_container(output.stderr):
                raise self._failure(output)

    async def list(self) -> Sequence[ContainerState]:
        async with self._list_lock:
            before = set(self._known_ids)
            output = await self._call(
                ps_argv(self._nerdctl, self._dialect.ps_format),
                timeout=self._call_timeout,
                what="ps",
            )
            if output.returncode != 0:
                raise self._failure(output)
            refs: Argv = []
            for entry in self._dialect.parse_ps(output.stdout):
                if CONTAINER_ID_RE.fullmatch(entry.container_id):
                    refs.append(entry.container_id)
                else:
                    log.warning(
                        "ignoring a container with an unusable id: %r", clip(entry.container_id)
                    )
            listed = await self._inspect(refs) if refs else []
            # Ids a run() learned while we listed stay known; so do those that
            # went between ps and inspect, until the next list: the events of
            # their removal are still on the way and must wake the agent.
            self._known_ids = (
                {item.container_id for item in listed} | (self._known_ids - before) | set(refs)
            )
            return one_per_replica(self._oom_kills.mark(listed))

    async def changes(self) -> AsyncGenerator[None, None]:
        source = (
            self._poll_changes()
            if self._watch == "poll"
            else event_changes(
                events_argv(self._nerdctl, self._dialect.events_format),
                self._relevant,
                restart_delay=self._restart_delay,
                restart_cap=self._restart_cap,
                settle=self._settle,
                debounce=self._debounce,
                cwd=self._cwd,
            )
        )
        async with aclosing(source):
            async for _ in source:
                yield

    # --- calls -------------------------------------------------------------

    async def _call(
        self, argv: Argv, *, timeout: float, what: str, limit: int = STDOUT_LIMIT
    ) -> _Output:
        started = anyio.current_time()
        try:
            result = await run_command(
                argv, timeout=timeout, limit=limit, stderr_tail=STDERR_TAIL, cwd=self._cwd
            )
        finally:
            log.debug("%s %s: %.3f s", self._engine, what, anyio.current_time() - started)
        if result.error is not None:
            raise RuntimeNotInstalled(f"cannot run {self._nerdctl}: {result.error}")
        if result.timed_out:
            raise RuntimeTimeout(f"{self._engine} {what} did not finish within {timeout:g} s")
        if result.returncode is None:
            raise ContainerRuntimeError(f"{self._engine} {what} printed more than {limit} bytes")
        return _Output(
            result.returncode,
            result.stdout.decode("utf-8", "replace"),
            result.stderr.decode("utf-8", "replace"),
        )

    def _failure(self, output: _Output, secret_values: Iterable[str] = ()) -> ContainerRuntimeError:
        return failure(
            output.returncode,
            output.stderr,
            secret_values,
            self._dialect.error_message,
            self._engine,
        )

    def _error_message(self, output: _Output) -> str | None:
        return self._dialect.error_message(output.stderr)

    @asynccontextmanager
    async def _exclusive(self, replica_id: str) -> AsyncIterator[None]:
        """One call sequence per replica at a time, within the limit of calls at once."""
        entry = self._replica_locks.setdefault(replica_id, _ReplicaLock())
        entry.users += 1
        try:
            async with entry.lock, self._call_limiter:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._replica_locks[replica_id]

    async def _run_container(self, spec: ContainerSpec, env_data: bytes | None) -> _Output:
        self._starting += 1
        try:
            with env_file(self._env_dir, spec.name, env_data) as path:
                argv = run_argv(self._nerdctl, self._oci_runtime, spec, str(path) if path else None)
                return await self._call(argv, timeout=self._run_timeout, what=f"run {spec.name}")
        finally:
            self._starting -= 1

    async def _discard(self, name: str) -> None:
        try:
            output = await self._call(
                rm_argv(self._nerdctl, name), timeout=self._call_timeout, what=f"rm {name}"
            )
        except ContainerRuntimeError as exc:
            log.warning("could not remove %s after a failed run: %s", name, exc)
            return
        if self._error_message(output) is not None and not self._dialect.no_such_container(
            output.stderr
        ):
            log.warning("could not remove %s after a failed run: %s", name, self._failure(output))

    async def _inspect(self, refs: Sequence[str]) -> ListedItems:
        output = await self._call(
            inspect_argv(self._nerdctl, refs),
            timeout=self._call_timeout,
            what="inspect",
            limit=INSPECT_OUTPUT_LIMIT,
        )
        # A container removed between ps and inspect is simply gone; the
        # engine still prints the others and exits non-zero.
        if output.returncode != 0 and not self._dialect.no_such_container(output.stderr):
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
                f"{self._engine} run exited 0, but no container {spec.name} exists afterwards"
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

    def _relevant(self, line: bytes) -> bool:
        oom = self._dialect.oom_container(line)
        if oom is not None:
            self._oom_kills.note(oom)
        container_id = self._dialect.changed_container(line)
        if container_id is None:
            return False
        return container_id in self._known_ids or self._starting > 0

    async def _poll_changes(self) -> AsyncGenerator[None, None]:
        last: frozenset[tuple[str, str]] | None = None
        first = True
        while True:
            snapshot: frozenset[tuple[str, str]] | None
            try:
                output = await self._call(
                    ps_argv(self._nerdctl, self._dialect.ps_format),
                    timeout=self._call_timeout,
                    what="ps",
                )
                snapshot = (
                    frozenset(
                        (e.container_id, ps_status_key(e.status))
                        for e in self._dialect.parse_ps(output.stdout)
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


if TYPE_CHECKING:
    from vectorlay import ports

    _runtime: ports.Runtime = EngineRuntime(env_dir=Path("/nonexistent"))

# The former name, kept for callers that name the nerdctl runtime.
NerdctlRuntime = EngineRuntime

__all__ = [
    "INSPECT_OUTPUT_LIMIT",
    "STDERR_TAIL",
    "STDOUT_LIMIT",
    "EngineRuntime",
    "NerdctlRuntime",
    "Watch",
]
