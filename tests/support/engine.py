"""A real container engine for the ``engine`` tests: Podman, and the Docker CLI driving it.

:func:`prepare` runs ``scripts/setup-podman.sh`` (which installs Podman, runc
and busybox with apt when missing, idempotently) and builds the test image;
what cannot be set up here comes back as a reason to skip, never silently.

The test image runs ``sh`` as PID 1: it exits 0 on SIGTERM, and otherwise
sleeps ``VL_SLEEP`` seconds (for ever by default) and exits ``VL_EXIT`` --
values that reach it through the agent's env file like any deploy's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[2]
SETUP_SCRIPT: Final = ROOT / "scripts" / "setup-podman.sh"
SOCKET: Final = os.environ.get("VECTORLAY_TEST_PODMAN_SOCKET", "/run/podman/podman.sock")
BASE_IMAGE: Final = "localhost/bb:1"
IMAGE: Final = "localhost/vl-test:1"
IMAGE_CMD: Final = [
    "sh",
    "-c",
    "trap 'exit 0' TERM; sleep ${VL_SLEEP:-2147483647} & wait $!; exit ${VL_EXIT:-0}",
]
# Where podman runs when a test calls it: conmon drops an `oom` marker into
# the working directory of whoever ran `podman run`.
SCRATCH: Final = Path(tempfile.gettempdir())


@dataclass(frozen=True)
class Engine:
    """One engine under test: its name, its command and what it can do here."""

    name: str
    cli: str
    env: dict[str, str] = field(default_factory=dict)
    # The Docker CLI cannot pass --device to Podman's service ("unknown server OS").
    devices: bool = True
    # The OCI runtime the engine can run here (no Kata on this machine).
    oci_runtime: str = "runc"


def _run(argv: Sequence[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, cwd=SCRATCH, check=False
    )


def podman(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The podman CLI, run from a scratch directory."""
    return _run(["podman", *args], timeout)


def prepare(script: Path = SETUP_SCRIPT) -> str | None:
    """Podman set up with its API service and the test image, or why it cannot be."""
    if not script.is_file():
        return f"{script} is missing"
    result = _run(["bash", str(script), "--service", SOCKET], timeout=600)
    if result.returncode == 3:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else "setup-podman.sh: cannot set up Podman here"
    if result.returncode != 0:
        raise RuntimeError(
            f"setup-podman.sh failed ({result.returncode}):\n{result.stderr[-4000:]}"
        )
    _ensure_image()
    return None


def _ensure_image() -> None:
    found = podman("image", "inspect", "--format", "{{json .Config.Cmd}}", IMAGE)
    if found.returncode == 0 and json.loads(found.stdout or "null") == IMAGE_CMD:
        return
    name = f"vl-test-build-{os.getpid()}"
    podman("rm", "-f", name)
    created = podman("create", "--name", name, BASE_IMAGE)
    if created.returncode != 0:
        raise RuntimeError(f"podman create {BASE_IMAGE}: {created.stderr.strip()}")
    try:
        committed = podman("commit", "-q", "--change", f"CMD {json.dumps(IMAGE_CMD)}", name, IMAGE)
        if committed.returncode != 0:
            raise RuntimeError(f"podman commit {IMAGE}: {committed.stderr.strip()}")
    finally:
        podman("rm", "-f", name)


def engines_here() -> dict[str, Engine | str]:
    """Each engine under test, or why it is not available on this machine."""
    found: dict[str, Engine | str] = {}
    podman_path = shutil.which("podman")
    found["podman"] = Engine("podman", podman_path) if podman_path else "podman is not on PATH"
    docker_path = os.environ.get("VECTORLAY_TEST_DOCKER") or shutil.which("docker")
    if docker_path is None:
        found["docker"] = (
            "no Docker CLI on PATH (set VECTORLAY_TEST_DOCKER to one; it drives "
            f"Podman's Docker-compatible service on {SOCKET})"
        )
    else:
        found["docker"] = Engine(
            "docker", docker_path, env={"DOCKER_HOST": f"unix://{SOCKET}"}, devices=False
        )
    return found


def inspect(name: str) -> dict[str, object] | None:
    """``podman inspect`` of one container (the Docker service shares its store)."""
    result = podman("inspect", "--type", "container", name)
    if result.returncode != 0:
        return None
    items = json.loads(result.stdout)
    return items[0] if items else None


def exec_env(name: str) -> dict[str, str]:
    """The environment of a process started inside the running container."""
    result = podman("exec", name, "env")
    assert result.returncode == 0, result.stderr
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


def finished_at(name: str) -> float:
    """When the container's PID 1 ended (UNIX seconds), from ``State.FinishedAt``."""
    item = inspect(name)
    assert item is not None, f"no container {name}"
    state = item["State"]
    assert isinstance(state, dict)
    return parse_time(str(state["FinishedAt"]))


def parse_time(text: str) -> float:
    """RFC 3339 with nanoseconds (Go's format) -> UNIX seconds."""
    base, _, rest = text.rstrip("Z").partition(".")
    fraction = "".join(ch for ch in rest if ch.isdigit())[:6]
    stamp = datetime.fromisoformat(base + "+00:00").timestamp()
    return stamp + (int(fraction.ljust(6, "0")) / 1e6 if fraction else 0.0)


def remove(names: Sequence[str]) -> None:
    # One name per call: Podman 4.3.1's `rm -f a b` removes neither when b is
    # missing, and still exits 0.
    for name in names:
        podman("rm", "-f", "-t", "0", name)


VFIO_DIR: Final = Path("/dev/vfio")
_made_vfio_dir: list[bool] = []


def make_device(group: str) -> Path | None:
    """``/dev/vfio/<group>`` as a copy of ``/dev/null`` (1:3), standing in for a VFIO group.

    Returns the node it made (for :func:`remove_device`), or ``None`` when
    one was there already.
    """
    node = VFIO_DIR / group
    if node.exists():
        return None
    if not VFIO_DIR.exists():
        VFIO_DIR.mkdir()
        _made_vfio_dir.append(True)
    os.mknod(node, 0o020666, os.makedev(1, 3))
    return node


def remove_device(node: Path | None) -> None:
    """Remove a node :func:`make_device` made, and ``/dev/vfio`` if it made that and it is empty."""
    if node is None:
        return
    node.unlink(missing_ok=True)
    if _made_vfio_dir and not any(VFIO_DIR.iterdir()):
        VFIO_DIR.rmdir()
        _made_vfio_dir.clear()


__all__ = [
    "BASE_IMAGE",
    "IMAGE",
    "IMAGE_CMD",
    "SOCKET",
    "Engine",
    "engines_here",
    "exec_env",
    "finished_at",
    "inspect",
    "make_device",
    "parse_time",
    "podman",
    "prepare",
    "remove",
    "remove_device",
]
