"""The ``--env-file`` through which a replica's env values reach the engine.

Env values never reach argv (world-readable in ``/proc``): they go through
a ``0600`` file in a ``0700`` directory, removed as soon as ``run`` returns,
fails, times out or is cancelled.  A value the engine's env-file reader
would change is refused with :class:`~vectorlay.errors.UnsupportedEnvValue`.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from vectorlay.adapters.runtime.stderr import clip
from vectorlay.domain.validation import ENV_NAME_RE, env_value_problem
from vectorlay.errors import ConfigError, ContainerRuntimeError, UnsupportedEnvValue

log = logging.getLogger(__name__)

# nerdctl reads env files with Go's bufio.Scanner, whose default token limit
# is 64 KiB; a longer line makes `nerdctl run` fail ("token too long").
ENV_LINE_MAX_BYTES: Final = 64 * 1024 - 1
ENV_FILE_SUFFIX: Final = ".env"


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
            raise UnsupportedEnvValue(clip(repr(name)), "invalid variable name")
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


def check_env_dir(path: Path) -> None:
    """Refuse a directory name the engine cannot take in ``--env-file``."""
    if any(c in str(path) for c in ',"\n\r'):
        # nerdctl reads --env-file as a comma-separated (CSV) list of paths.
        raise ConfigError(f"env directory {str(path)!r}: no commas or quotes, please")


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


@contextmanager
def env_file(directory: Path, stem: str, data: bytes | None) -> Iterator[Path | None]:
    """A private file holding ``data`` for as long as the block runs (``None`` without data).

    The name is unguessable and new (``O_EXCL``, no symlink followed); the
    file is removed however the block ends, a half-written one included.
    """
    if data is None:
        yield None
        return
    path = directory / f"{stem}.{secrets.token_hex(8)}{ENV_FILE_SUFFIX}"
    try:
        try:
            _write_private(path, data)
        except OSError as exc:
            raise ContainerRuntimeError(
                f"cannot write the env file: {exc.strerror or exc}"
            ) from None
        yield path
    finally:
        _remove_quietly(path)


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


__all__ = [
    "ENV_FILE_SUFFIX",
    "ENV_LINE_MAX_BYTES",
    "check_env_dir",
    "env_file",
    "env_file_bytes",
    "prepare_env_dir",
]
