"""FileConfigStore on real files: atomic 0600 writes, clear errors, no secrets in them.

Failures a test process cannot cause on itself (a read-only directory, an
unreadable file, a full disk) run in a child process: with an RLIMIT_FSIZE
for the full disk, and without the capabilities that let root ignore file
permissions when the suite runs as root.
"""

from __future__ import annotations

import ctypes
import logging
import os
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import msgspec
import pytest

from tests.support import NODE_TOKEN as TOKEN
from vectorlay.adapters.filesystem import CONFIG_FILE_NAME, MAX_CONFIG_BYTES, FileConfigStore
from vectorlay.domain.agent.identity import NodeConfig
from vectorlay.errors import ConfigWriteError, CorruptConfig

CONFIG = NodeConfig(
    node_id="node-7f3a", node_token=TOKEN, control_plane_url="wss://cp.example.com/v1/agent"
)
NEWER = NodeConfig(
    node_id="node-8b4c",
    node_token="ntok-Newer-2a6f",
    control_plane_url="wss://cp.example.com/v1/agent",
)


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def store(state_dir: Path) -> FileConfigStore:
    return FileConfigStore(state_dir)


# --- round trip -----------------------------------------------------------------


async def test_load_without_a_file_is_none(store: FileConfigStore, state_dir: Path) -> None:
    assert await store.load() is None
    assert not state_dir.exists()


async def test_save_then_load_round_trip(store: FileConfigStore) -> None:
    await store.save(CONFIG)
    assert await store.load() == CONFIG
    on_disk = msgspec.json.decode(store.path.read_bytes())
    assert on_disk == {
        "node_id": "node-7f3a",
        "node_token": TOKEN,
        "control_plane_url": "wss://cp.example.com/v1/agent",
    }


async def test_save_creates_0700_dir_and_0600_file_whatever_the_umask(tmp_path: Path) -> None:
    state_dir = tmp_path / "var" / "lib" / "vectorlay"
    old = os.umask(0o277)  # would leave the directory unwritable for its owner
    try:
        await FileConfigStore(state_dir).save(CONFIG)
    finally:
        os.umask(old)
    assert mode(state_dir) == 0o700
    assert mode(state_dir / CONFIG_FILE_NAME) == 0o600
    assert files_in(state_dir) == [CONFIG_FILE_NAME]


async def test_save_leaves_an_existing_directory_mode_alone(
    store: FileConfigStore, state_dir: Path
) -> None:
    state_dir.mkdir()
    os.chmod(state_dir, 0o750)  # noqa: S103 - an operator's choice to keep
    await store.save(CONFIG)
    assert mode(state_dir) == 0o750
    assert mode(store.path) == 0o600


async def test_save_replaces_and_leaves_no_temporary_file(
    store: FileConfigStore, state_dir: Path
) -> None:
    await store.save(CONFIG)
    await store.save(NEWER)
    assert await store.load() == NEWER
    assert files_in(state_dir) == [CONFIG_FILE_NAME]


async def test_save_removes_temporary_files_left_by_a_killed_save(
    store: FileConfigStore, state_dir: Path
) -> None:
    state_dir.mkdir()
    stale = state_dir / f".{CONFIG_FILE_NAME}.abc123.tmp"
    stale.write_text('{"node_id": "half')
    other = state_dir / "operator-notes.txt"
    other.write_text("keep me")
    await store.save(CONFIG)
    assert files_in(state_dir) == [CONFIG_FILE_NAME, "operator-notes.txt"]


async def test_unknown_keys_are_tolerated(store: FileConfigStore, state_dir: Path) -> None:
    state_dir.mkdir()
    store.path.write_bytes(_valid(added_by_a_newer_agent=[1, 2]))
    store.path.chmod(0o600)
    assert await store.load() == CONFIG


async def test_a_save_whose_caller_is_cancelled_still_completes(
    store: FileConfigStore, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.save(CONFIG)
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        time.sleep(0.3)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    with anyio.move_on_after(0.05) as scope:
        await store.save(NEWER)
    monkeypatch.undo()
    assert scope.cancel_called  # the caller was cancelled while the thread wrote
    assert await store.load() == NEWER
    assert files_in(state_dir) == [CONFIG_FILE_NAME]


# --- unusable files ---------------------------------------------------------------


def _valid(**changes: object) -> bytes:
    fields: dict[str, object] = {
        "node_id": "node-7f3a",
        "node_token": TOKEN,
        "control_plane_url": "wss://cp.example.com/v1/agent",
    }
    fields.update(changes)
    return msgspec.json.encode({k: v for k, v in fields.items() if v is not None})


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        pytest.param(b"", "empty", id="empty"),
        pytest.param(b"  \n\t\n", "empty", id="whitespace"),
        pytest.param(b"node_token=" + TOKEN.encode(), "not valid JSON", id="not-json"),
        pytest.param(_valid()[:-20], "not valid JSON", id="truncated"),
        pytest.param(b"\x00" * 64, "not valid JSON", id="zeros"),
        pytest.param(b"[]", "expected `object`", id="array"),
        pytest.param(b"null", "expected `object`", id="null"),
        pytest.param(b'"' + TOKEN.encode() + b'"', "expected `object`", id="string"),
        pytest.param(_valid(node_token=None), "node_token", id="missing-token"),
        pytest.param(_valid(node_id=None), "node_id", id="missing-node-id"),
        pytest.param(_valid(control_plane_url=None), "control_plane_url", id="missing-url"),
        pytest.param(_valid(node_id=42), "node_id", id="wrong-type"),
        pytest.param(_valid(node_token=""), "node_token", id="empty-token"),
        pytest.param(b'{"node_token": "' + b"x" * MAX_CONFIG_BYTES + b'"}', "larger", id="huge"),
    ],
)
async def test_corrupt_file_raises_naming_the_file_never_the_token(
    store: FileConfigStore, state_dir: Path, content: bytes, problem: str
) -> None:
    state_dir.mkdir()
    store.path.write_bytes(content)
    store.path.chmod(0o600)
    with pytest.raises(CorruptConfig) as corrupt:
        await store.load()
    message = str(corrupt.value)
    assert str(store.path) in message
    assert problem.lower() in message.lower()
    assert TOKEN not in message
    assert "\n" not in message
    assert store.path.read_bytes() == content  # never repaired or truncated


async def test_directory_in_place_of_the_file_is_corrupt(
    store: FileConfigStore, state_dir: Path
) -> None:
    store.path.mkdir(parents=True)
    with pytest.raises(CorruptConfig, match=CONFIG_FILE_NAME.replace(".", r"\.")):
        await store.load()


async def test_fifo_in_place_of_the_file_does_not_hang(
    store: FileConfigStore, state_dir: Path
) -> None:
    state_dir.mkdir()
    os.mkfifo(store.path)
    with anyio.fail_after(5), pytest.raises(CorruptConfig, match="not a regular file"):
        await store.load()


async def test_file_readable_by_others_loads_with_a_warning(
    store: FileConfigStore, state_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await store.save(CONFIG)
    store.path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="vectorlay.config"):
        assert await store.load() == CONFIG
    warnings = [r for r in caplog.records if r.name == "vectorlay.config"]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert "644" in warnings[0].getMessage()
    assert str(store.path) in warnings[0].getMessage()
    assert TOKEN not in warnings[0].getMessage()


async def test_file_private_to_its_owner_loads_silently(
    store: FileConfigStore, caplog: pytest.LogCaptureFixture
) -> None:
    await store.save(CONFIG)
    with caplog.at_level(logging.DEBUG, logger="vectorlay.config"):
        assert await store.load() == CONFIG
    assert [r for r in caplog.records if r.name == "vectorlay.config"] == []


# --- write failures in this process --------------------------------------------------


async def test_state_dir_that_is_a_file_is_a_write_error(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigWriteError, match="not a directory"):
        await FileConfigStore(blocker).save(CONFIG)
    assert blocker.read_text() == "not a directory"


@pytest.mark.parametrize("failing", ["fsync", "replace", "write"])
async def test_failure_mid_save_keeps_the_old_file_and_no_temporary(
    store: FileConfigStore,
    state_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    failing: str,
) -> None:
    await store.save(CONFIG)
    before = store.path.read_bytes()

    def broken(*args: object, **kwargs: object) -> object:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, failing, broken)
    with pytest.raises(ConfigWriteError, match="Input/output error") as failed:
        await store.save(NEWER)
    monkeypatch.undo()
    assert str(store.path) in str(failed.value)
    assert store.path.read_bytes() == before
    assert files_in(state_dir) == [CONFIG_FILE_NAME]


# --- write and read failures in a child process ----------------------------------------

CHILD = textwrap.dedent(
    """
    import resource, signal, sys
    from pathlib import Path

    import anyio

    from vectorlay.adapters.filesystem import FileConfigStore
    from vectorlay.domain.agent.identity import NodeConfig
    from vectorlay.errors import ConfigWriteError, CorruptConfig

    async def main(op: str, state_dir: str, fsize: str) -> None:
        store = FileConfigStore(Path(state_dir))
        if int(fsize):
            # Past the limit write() fails with EFBIG, as on a full disk,
            # instead of the default SIGXFSZ killing the process.
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (int(fsize), int(fsize)))
        try:
            if op == "save":
                await store.save(NodeConfig(
                    node_id="node-child", node_token="ntok-Child-9e8d7c6b5a4f3e2d1c0b",
                    control_plane_url="wss://cp.example.com/v1/agent"))
            else:
                print(await store.load())
        except (ConfigWriteError, CorruptConfig) as exc:
            print(type(exc).__name__, exc)
            sys.exit(3)

    anyio.run(main, *sys.argv[1:4])
    """
)


def _without_file_permission_override() -> None:
    """In the child: root loses the capabilities that bypass file permissions."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop, cap_dac_override, cap_dac_read_search = 24, 1, 2
    for capability in (cap_dac_override, cap_dac_read_search):
        if libc.prctl(pr_capbset_drop, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def run_child(op: str, state_dir: Path, *, fsize: int = 0) -> subprocess.CompletedProcess[str]:
    preexec: Callable[[], None] | None = None
    if os.geteuid() == 0:
        preexec = _without_file_permission_override
    return subprocess.run(
        [sys.executable, "-c", CHILD, op, str(state_dir), str(fsize)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=preexec,
        check=False,
    )


@pytest.fixture
def saved(state_dir: Path) -> bytes:
    anyio.run(FileConfigStore(state_dir).save, CONFIG)
    return (state_dir / CONFIG_FILE_NAME).read_bytes()


def test_read_only_state_dir_is_a_write_error_and_keeps_the_old_file(
    state_dir: Path, saved: bytes
) -> None:
    state_dir.chmod(0o500)
    try:
        child = run_child("save", state_dir)
    finally:
        state_dir.chmod(0o700)
    assert child.returncode == 3, child.stderr
    assert child.stdout.startswith("ConfigWriteError")
    assert str(state_dir / CONFIG_FILE_NAME) in child.stdout
    assert "ntok-Child" not in child.stdout + child.stderr
    assert (state_dir / CONFIG_FILE_NAME).read_bytes() == saved
    assert files_in(state_dir) == [CONFIG_FILE_NAME]


def test_full_disk_is_a_write_error_and_keeps_the_old_file(state_dir: Path, saved: bytes) -> None:
    child = run_child("save", state_dir, fsize=16)
    assert child.returncode == 3, child.stderr
    assert child.stdout.startswith("ConfigWriteError")
    assert "too large" in child.stdout.lower()  # EFBIG: "File too large"
    assert "ntok-Child" not in child.stdout + child.stderr
    assert (state_dir / CONFIG_FILE_NAME).read_bytes() == saved
    assert files_in(state_dir) == [CONFIG_FILE_NAME]


def test_unreadable_file_is_corrupt_config_naming_the_file(state_dir: Path, saved: bytes) -> None:
    path = state_dir / CONFIG_FILE_NAME
    path.chmod(0o000)
    try:
        child = run_child("load", state_dir)
    finally:
        path.chmod(0o600)
    assert child.returncode == 3, child.stderr
    assert child.stdout.startswith("CorruptConfig")
    assert str(path) in child.stdout
    assert "Permission denied" in child.stdout
    assert TOKEN not in child.stdout + child.stderr
    assert path.read_bytes() == saved


def test_child_sees_a_good_file(state_dir: Path, saved: bytes) -> None:
    # The harness itself works: the same child loads a readable file.
    child = run_child("load", state_dir)
    assert child.returncode == 0, child.stderr
    assert "node-7f3a" in child.stdout
    assert TOKEN not in child.stdout  # NodeConfig's repr hides the token


async def test_deeply_nested_node_json_is_corrupt_not_a_crash(tmp_path: Path) -> None:
    store = FileConfigStore(tmp_path)
    # An unknown key whose value nests deeply: msgspec recurses while skipping it.
    store.path.write_text('{"x": ' + "[" * 30_000 + "]" * 30_000 + "}")  # under 64 KiB
    store.path.chmod(0o600)
    with pytest.raises(CorruptConfig, match=r"node\.json: not a node config"):
        await store.load()
