"""``node.json`` in the state directory (:class:`vectorlay.ports.ConfigStore`).

Guarantees:

- ``save`` replaces the file atomically: a temporary file in the same
  directory, created ``0600``, written, fsynced, renamed over ``node.json``,
  then the directory fsynced.  A crash or a full disk leaves either the old
  file or the new one, never a mix, and no temporary file behind.
- The state directory is created ``0700`` when missing.
- ``load`` never repairs or rewrites anything: a file it cannot use raises
  ``CorruptConfig`` naming the file, so the agent stops instead of silently
  registering again over it.
- Errors name the file and say what is wrong; they never quote its content
  (it holds the node token).

Blocking file calls run in a worker thread (``anyio.to_thread``); a save
that was started finishes even if its caller is cancelled.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import tempfile
from pathlib import Path
from typing import Final

import anyio.to_thread
import msgspec

from vectorlay.domain.agent.identity import NodeConfig
from vectorlay.errors import ConfigWriteError, CorruptConfig

logger = logging.getLogger("vectorlay.config")

CONFIG_FILE_NAME: Final = "node.json"
MAX_CONFIG_BYTES: Final = 64 * 1024
"""A node.json larger than this is not one this agent wrote."""

_TEMP_PREFIX: Final = f".{CONFIG_FILE_NAME}."
_TEMP_SUFFIX: Final = ".tmp"
_REQUIRED: Final = ("node_id", "node_token", "control_plane_url")


class FileConfigStore:
    """The node's identity in ``<state_dir>/node.json``."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / CONFIG_FILE_NAME

    async def load(self) -> NodeConfig | None:
        """The saved config; None when there is no file; ``CorruptConfig`` when unusable."""
        return await anyio.to_thread.run_sync(self._load)

    async def save(self, config: NodeConfig) -> None:
        """Replace ``node.json`` atomically; ``ConfigWriteError`` leaves the old file intact."""
        await anyio.to_thread.run_sync(self._save, config)

    # --- reading ---------------------------------------------------------

    def _load(self) -> NodeConfig | None:
        data = self._read()
        if data is None:
            return None
        if not data.strip():
            raise CorruptConfig(f"{self.path}: the file is empty")
        try:
            config = msgspec.json.decode(data, type=NodeConfig)
        except msgspec.ValidationError as exc:
            # msgspec names the field and the expected type, never the value.
            raise CorruptConfig(f"{self.path}: not a node config: {exc}") from None
        except msgspec.DecodeError as exc:
            raise CorruptConfig(f"{self.path}: not valid JSON: {exc}") from None
        except RecursionError:
            raise CorruptConfig(f"{self.path}: not a node config: nested too deeply") from None
        for name in _REQUIRED:
            if not getattr(config, name):
                raise CorruptConfig(f"{self.path}: field `{name}` is empty")
        return config

    def _read(self) -> bytes | None:
        # O_NONBLOCK: opening a FIFO put there by mistake must not hang the
        # agent; it has no effect on regular files.
        flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
        try:
            fd = os.open(self.path, flags)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CorruptConfig(f"{self.path}: cannot open: {_reason(exc)}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise CorruptConfig(f"{self.path}: not a regular file")
            if info.st_size > MAX_CONFIG_BYTES:
                raise CorruptConfig(f"{self.path}: larger than {MAX_CONFIG_BYTES} bytes")
            _warn_if_exposed(self.path, info)
            return _read_all(fd, MAX_CONFIG_BYTES + 1)
        except OSError as exc:
            raise CorruptConfig(f"{self.path}: cannot read: {_reason(exc)}") from None
        finally:
            os.close(fd)

    # --- writing ---------------------------------------------------------

    def _save(self, config: NodeConfig) -> None:
        data = msgspec.json.format(msgspec.json.encode(config), indent=2) + b"\n"
        self._ensure_dir()
        self._remove_stale_temps()
        try:
            fd, temp_name = tempfile.mkstemp(
                prefix=_TEMP_PREFIX, suffix=_TEMP_SUFFIX, dir=self.state_dir
            )
        except OSError as exc:
            raise self._write_error(exc) from None
        temp = Path(temp_name)
        try:
            try:
                os.fchmod(fd, 0o600)
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise self._write_error(exc) from None
        try:
            _fsync_dir(self.state_dir)
        except OSError as exc:
            raise ConfigWriteError(
                f"{self.path} was replaced but its directory could not be synced to disk: "
                f"{_reason(exc)}"
            ) from None

    def _ensure_dir(self) -> None:
        if self.state_dir.is_dir():
            return
        try:
            self.state_dir.mkdir(mode=0o700, parents=True)
            # mkdir's mode goes through the umask; the directory must be 0700.
            os.chmod(self.state_dir, 0o700)
        except FileExistsError:
            if not self.state_dir.is_dir():
                raise ConfigWriteError(
                    f"state directory {self.state_dir} exists and is not a directory"
                ) from None
        except OSError as exc:
            raise ConfigWriteError(
                f"cannot create state directory {self.state_dir}: {_reason(exc)}"
            ) from None

    def _remove_stale_temps(self) -> None:
        # Left by a save that was killed between create and rename.
        with contextlib.suppress(OSError):
            for stale in self.state_dir.glob(f"{_TEMP_PREFIX}*{_TEMP_SUFFIX}"):
                with contextlib.suppress(OSError):
                    stale.unlink()

    def _write_error(self, exc: OSError) -> ConfigWriteError:
        return ConfigWriteError(f"cannot write {self.path}: {_reason(exc)}")


def _warn_if_exposed(path: Path, info: os.stat_result) -> None:
    if info.st_mode & 0o077:
        logger.warning(
            "%s is accessible to group or others (mode %03o); it holds the node token: "
            "chmod 600 it",
            path,
            stat.S_IMODE(info.st_mode),
        )


def _read_all(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = os.read(fd, limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size >= limit:
        raise OSError(errno.EFBIG, f"larger than {limit - 1} bytes")
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some filesystems cannot sync a directory; the rename is done anyway.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


__all__ = ["CONFIG_FILE_NAME", "MAX_CONFIG_BYTES", "FileConfigStore"]
