"""Where Podman cannot be set up, the real-engine tests skip with the reason, never silently."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import engine as real

pytestmark = pytest.mark.engine
AS_NOBODY = ("setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups")


def script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "setup-podman.sh"
    path.write_text(f"#!/usr/bin/env bash\n{body}\n")
    return path


def test_a_machine_that_cannot_have_podman_gives_the_reason(tmp_path: Path) -> None:
    reason = real.prepare(
        script(tmp_path, 'echo "setup-podman: cannot set up Podman here: no apt-get" >&2; exit 3')
    )
    assert reason == "setup-podman: cannot set up Podman here: no apt-get"
    assert real.prepare(tmp_path / "absent.sh") == f"{tmp_path / 'absent.sh'} is missing"


def test_a_failed_setup_is_an_error_not_a_skip(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"setup-podman.sh failed \(1\):\n.*apt-get failed"):
        real.prepare(script(tmp_path, 'echo "setup-podman: apt-get failed" >&2; exit 1'))


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv"
)
def test_the_setup_script_refuses_a_non_root_user_with_exit_3() -> None:
    result = subprocess.run(
        [*AS_NOBODY, "bash", str(real.SETUP_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
        check=False,
    )
    assert result.returncode == 3, result.stderr
    assert result.stderr.strip().endswith(
        "setup-podman: cannot set up Podman here: not root (uid 65534); "
        "rootful Podman with --device needs root"
    )
