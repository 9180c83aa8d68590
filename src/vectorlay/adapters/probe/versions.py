"""Dependencies found on ``PATH`` and their versions from ``--version``.

Real ``--version`` first lines this module reads (fixtures in
``tests/fixtures/versions/``)::

    containerd github.com/containerd/containerd v1.7.3 7880925980b1…
    containerd github.com/containerd/containerd/v2 v2.2.1 dea7da592f5d…
    nerdctl version 2.2.1
    Docker version 28.2.2, build e6534b4
    podman version 4.3.1
    kata-runtime  : 3.0.0            (then "commit" and "OCI specs" lines)
    virtiofsd 1.14.0                 (Rust virtiofsd)
    virtiofsd backend 1.7.0          (Debian's build of the Rust one)
    virtiofsd version 6.2.0 (Debian 1:6.2+dfsg-2ubuntu6.31)   (legacy C, from QEMU)

Builds and versions not seen here often print just the name and the version
(``containerd 1.7.2``, ``kata-runtime version 3.2.0``): a first line that
starts with the tool's own name followed by a version is read too.

Versions are reported without a leading ``v`` (``1.7.3``).  A tool that is
missing, not executable, hangs, exits non-zero or prints anything else gives
``ok: false`` with a one-line ``detail``; nothing here raises.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from typing import Final

from vectorlay.adapters.commands import CommandResult, first_line, run_command
from vectorlay.adapters.probe.pci import clean_text
from vectorlay.domain.messages import Dependency

OUTPUT_LIMIT: Final = 64 << 10
_VERSION: Final = r"v?(?P<version>\d+\.\d+(?:\.\d+)*(?:[-+~][0-9A-Za-z.+~-]*)?)"
_END: Final = r"(?:\s|\(|$)"

VERSION_PATTERNS: Final[dict[str, re.Pattern[str]]] = {
    # "containerd <module path or package name> <version> <commit>"
    "containerd": re.compile(rf"containerd\s+\S+\s+{_VERSION}{_END}"),
    "nerdctl": re.compile(rf"nerdctl\s+version\s+{_VERSION}{_END}"),
    "docker": re.compile(rf"Docker\s+version\s+{_VERSION}(?:,|{_END})"),
    "podman": re.compile(rf"podman\s+version\s+{_VERSION}{_END}"),
    "kata-runtime": re.compile(rf"kata-runtime\s*:\s*{_VERSION}{_END}"),
    "virtiofsd": re.compile(rf"virtiofsd(?:\s+backend|\s+version)?\s+{_VERSION}{_END}"),
}
_MAX_VERSION: Final = 64


def _plain_pattern(tool: str) -> re.Pattern[str]:
    # "<tool> [version][:] <version>", the tool maybe named by its path.
    return re.compile(
        rf"(?:\S*/)?{re.escape(tool)}\s*:?\s+(?:version\s*:?\s*)?{_VERSION}{_END}",
        re.IGNORECASE,
    )


PLAIN_PATTERNS: Final = {tool: _plain_pattern(tool) for tool in VERSION_PATTERNS}


def parse_version(tool: str, output: str) -> str | None:
    """The version in ``tool``'s ``--version`` output; ``None`` if it is not recognised.

    Only the first non-blank line is read: every supported tool puts its
    name and version there, and anything else there is not that tool's
    answer.
    """
    line = next((ln.strip() for ln in output.splitlines() if ln.strip()), "")[:512]
    match = VERSION_PATTERNS[tool].match(line) or PLAIN_PATTERNS[tool].match(line)
    if match is None:
        return None
    version = match.group("version")
    return version if len(version) <= _MAX_VERSION else None


@dataclass(frozen=True, slots=True)
class Located:
    """Where a command was found (``path``), or why it cannot be used (``problem``)."""

    path: str | None
    problem: str = ""


def locate(command: str, path_env: str) -> Located:
    """Find ``command`` as ``shutil.which`` does, telling "missing" from "not executable".

    A command with a ``/`` in it is taken as a path and not searched for.
    Empty ``PATH`` entries are skipped: a root daemon never runs programs
    from its working directory.
    """
    if "/" in command:
        candidates = [command]
    else:
        candidates = [os.path.join(d, command) for d in path_env.split(os.pathsep) if d]
    not_executable: str | None = None
    for candidate in candidates:
        try:
            mode = os.stat(candidate).st_mode
        except (OSError, ValueError):
            continue
        if stat.S_ISREG(mode) and os.access(candidate, os.X_OK):
            return Located(candidate)
        if not_executable is None:
            not_executable = candidate
    if not_executable is not None:
        return Located(None, f"{clean_text(not_executable)} is not an executable file")
    if "/" in command:
        return Located(None, f"not found: {clean_text(command)}")
    return Located(None, "not found on PATH")


async def check_tool(name: str, command: str, *, path_env: str, timeout: float) -> Dependency:
    """Locate ``command`` and read its version; ``name`` picks the version format."""
    located = locate(command, path_env)
    if located.path is None:
        return Dependency(name=name, ok=False, version=None, detail=located.problem)
    result = await run_command([located.path, "--version"], timeout=timeout, limit=OUTPUT_LIMIT)
    return dependency_from_result(name, located.path, result, timeout=timeout)


def dependency_from_result(
    name: str, path: str, result: CommandResult, *, timeout: float
) -> Dependency:
    shown = f"`{clean_text(path, 120)} --version`"
    detail = ""
    if result.error is not None:
        detail = f"cannot run {clean_text(path, 120)}: {result.error}"
    elif result.timed_out:
        detail = f"{shown} did not answer within {timeout:g} s"
    elif result.truncated:
        detail = f"{shown} printed more than {OUTPUT_LIMIT // 1024} KiB"
    elif result.returncode != 0:
        said = clean_text(first_line(result.stderr) or first_line(result.stdout), 120)
        detail = f"{shown} exited with status {result.returncode}" + (f": {said}" if said else "")
    if detail:
        return Dependency(name=name, ok=False, version=None, detail=detail)
    text = result.stdout.decode("utf-8", "replace")
    if not text.strip():
        text = result.stderr.decode("utf-8", "replace")
    version = parse_version(name, text)
    if version is None:
        said = clean_text(first_line(text.encode()), 80)
        return Dependency(
            name=name,
            ok=False,
            version=None,
            detail=f"unrecognised {shown} output: {said!r}" if said else f"{shown} printed nothing",
        )
    return Dependency(name=name, ok=True, version=version, detail="")


__all__ = [
    "OUTPUT_LIMIT",
    "VERSION_PATTERNS",
    "Located",
    "check_tool",
    "dependency_from_result",
    "locate",
    "parse_version",
]
