"""``vectorlay-agent control-plane`` startup errors: one line and an exit status, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vectorlay.app import cli
from vectorlay.app.backends import backend_installed, missing_backend
from vectorlay.app.controlplane import bootstrap as controlplane
from vectorlay.app.options import control_plane_settings
from vectorlay.app.settings import ControlPlaneSettings

NOT_INSTALLED = (
    "vectorlay-agent: error: --backend trio: not installed (pip install 'vectorlay[trio]')"
)


def test_a_backend_that_is_not_installed_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "trio", None)  # what an absent package looks like
    db = tmp_path / "cp.sqlite3"
    settings = ControlPlaneSettings(port=0, db=db, backend="trio")
    assert controlplane.main(settings) == controlplane.EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.err == NOT_INSTALLED + "\n"
    assert captured.out == ""
    assert not db.exists()  # refused before anything started


def test_the_command_line_exits_2_with_one_line(tmp_path: Path) -> None:
    script = (
        "import sys; sys.modules['trio'] = None\n"
        "from vectorlay.app.cli import main\n"
        "sys.exit(main(sys.argv[1:], {}))\n"
    )
    argv = ["control-plane", "--backend", "trio", "--listen", "127.0.0.1:0"]
    argv += ["--db", str(tmp_path / "cp.sqlite3")]
    done = subprocess.run(
        [sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr == NOT_INSTALLED + "\n"
    assert "Traceback" not in done.stderr


def test_every_token_of_the_admin_token_file_counts(tmp_path: Path) -> None:
    admin = tmp_path / "admin"
    admin.write_text("\n  admin-1  \n\nadmin-2\n")
    args = cli._parser().parse_args(["control-plane", "--admin-token-file", str(admin)])
    settings = control_plane_settings(args, {"VECTORLAY_CP_ADMIN_TOKEN": "env-admin"})
    config = controlplane.config_from(settings)
    assert config.admin_tokens == ("admin-1", "admin-2")
    assert "admin-1" not in repr(config)
    args = cli._parser().parse_args(["control-plane"])
    from_env = controlplane.config_from(
        control_plane_settings(args, {"VECTORLAY_CP_ADMIN_TOKEN": " env-admin "})
    )
    assert from_env.admin_tokens == ("env-admin",)
    assert controlplane.config_from(control_plane_settings(args, {})).admin_tokens == ()


def test_installed_backends_pass() -> None:
    assert backend_installed("asyncio")
    assert missing_backend("asyncio", "x") is None
    assert missing_backend("trio", "x") is None  # the test environment has it
