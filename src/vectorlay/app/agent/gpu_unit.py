"""``prepare-gpus --persist``: a oneshot systemd unit that binds the GPUs again at every boot.

Binds made through sysfs last until the next reboot; the unit runs
``prepare-gpus --apply`` (with the same ``--gpu`` selection) before
containerd and the agent start, so the agent's first report already finds
the GPUs on vfio-pci.  ``contrib/vectorlay-prepare-gpus.service`` is
:func:`render_unit` with no selection and the packaged path (a test keeps
the two equal).

Installed as ``<root>/etc/systemd/system/vectorlay-prepare-gpus.service``
and nothing else.  Without ``--root`` the ``systemctl`` commands that make
it effective are run; with ``--root`` (packaging, image builds) they are
printed for the image's own first boot or for ``systemctl --root``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from vectorlay.adapters.commands import CommandResult, first_line, run_command

UNIT_NAME: Final = "vectorlay-prepare-gpus.service"
UNIT_DIR: Final = Path("etc/systemd/system")
# Where `pip install .` run as root puts the command (as contrib/vectorlay-agent.service).
PACKAGED_EXECUTABLE: Final = "/usr/local/bin/vectorlay-agent"
SYSTEMCTL_TIMEOUT: Final = 60.0

Runner = Callable[[Sequence[str]], Awaitable[CommandResult]]


def render_unit(executable: str = PACKAGED_EXECUTABLE, gpus: Sequence[str] = ()) -> str:
    command = [executable, "prepare-gpus", "--apply"]
    for address in gpus:
        command += ["--gpu", address]
    return f"""\
# systemd unit: bind GPUs and their IOMMU-group siblings to vfio-pci at boot
# (see docs/gpus.md).  Installed by `vectorlay-agent prepare-gpus --apply --persist`,
# which writes the --gpu selection of that run into ExecStart; to install by hand:
#   cp contrib/{UNIT_NAME} /etc/systemd/system/
#   systemctl daemon-reload && systemctl enable {UNIT_NAME}
# To undo: systemctl disable {UNIT_NAME}, remove the file, reboot (or see
# docs/gpus.md for giving a device back without a reboot).
[Unit]
Description=vectorlay: bind GPUs to vfio-pci for passthrough
# Before the container engine and the agent, so both find the GPUs ready.
Before=containerd.service vectorlay-agent.service
After=systemd-modules-load.service

[Service]
Type=oneshot
RemainAfterExit=yes
# Exit 1 (a bind that did not take, no IOMMU groups) marks the unit failed:
# `systemctl status {UNIT_NAME}` shows the reason.
ExecStart={shlex.join(command)}

[Install]
WantedBy=multi-user.target
"""


@dataclass(frozen=True, slots=True)
class Persisted:
    path: Path
    commands: tuple[str, ...]  # as typed by an operator
    ran: bool  # the commands were run here (else they are for the operator)
    problems: tuple[str, ...] = ()


def running_executable() -> str:
    """The absolute path of this ``vectorlay-agent``, for ExecStart on this host."""
    # The program being run first: `sudo /opt/vectorlay/bin/vectorlay-agent`
    # must not be swapped for another install that sudo's PATH finds.
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "vectorlay-agent" and os.path.isfile(argv0):
        return os.path.abspath(argv0)
    found = shutil.which("vectorlay-agent")
    return os.path.abspath(found) if found else PACKAGED_EXECUTABLE


def write_unit(root: Path, text: str) -> Path:
    """``<root>/etc/systemd/system/<unit>``, replaced atomically, mode 0644."""
    folder = root / UNIT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / UNIT_NAME
    tmp = folder / f".{UNIT_NAME}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


async def persist(
    gpus: Sequence[str], *, root: Path | None, run: Runner | None = None
) -> Persisted:
    """Install the unit under ``root`` (``/`` when ``None``) and enable it."""
    if root is None:
        path = write_unit(Path("/"), render_unit(running_executable(), gpus))
        commands = (["systemctl", "daemon-reload"], ["systemctl", "enable", UNIT_NAME])
        problems = []
        runner = run or _systemctl
        for argv in commands:
            result = await runner(argv)
            if not result.ok:
                why = first_line(result.stderr) or result.error or f"status {result.returncode}"
                problems.append(f"{shlex.join(argv)}: {why}")
        return Persisted(path, tuple(shlex.join(c) for c in commands), True, tuple(problems))
    path = write_unit(root, render_unit(PACKAGED_EXECUTABLE, gpus))
    later = (f"systemctl --root={shlex.quote(str(root))} enable {UNIT_NAME}",)
    return Persisted(path, later, False)


async def _systemctl(argv: Sequence[str]) -> CommandResult:
    return await run_command(argv, timeout=SYSTEMCTL_TIMEOUT)


__all__ = [
    "PACKAGED_EXECUTABLE",
    "UNIT_NAME",
    "Persisted",
    "persist",
    "render_unit",
    "running_executable",
    "write_unit",
]
