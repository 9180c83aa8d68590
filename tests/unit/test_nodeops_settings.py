"""The node-operation settings: --image-store, --min-free-gb, --metrics-textfile, and `status`'s."""

from __future__ import annotations

from pathlib import Path

import pytest

from vectorlay.app import cli, options
from vectorlay.app.agent.settings import AgentSettings, CheckSettings
from vectorlay.app.cli import main
from vectorlay.app.options import UsageError


def run_settings(*argv: str, env: dict[str, str] | None = None) -> AgentSettings:
    return options.agent_settings(cli._parser().parse_args(["run", *argv]), env or {})


def check_settings(*argv: str, env: dict[str, str] | None = None) -> CheckSettings:
    return options.check_settings(cli._parser().parse_args(["check", *argv]), env or {})


def test_defaults() -> None:
    settings = run_settings()
    assert (settings.image_store, settings.min_free_gb, settings.metrics_textfile) == (
        None,
        20,
        None,
    )
    assert check_settings().min_free_gb == 20


def test_flag_wins_over_environment() -> None:
    env = {
        "VECTORLAY_IMAGE_STORE": "/env/store",
        "VECTORLAY_MIN_FREE_GB": "30",
        "VECTORLAY_METRICS_TEXTFILE": "/env/vl.prom",
    }
    from_env = run_settings(env=env)
    assert (from_env.image_store, from_env.min_free_gb, from_env.metrics_textfile) == (
        Path("/env/store"),
        30,
        Path("/env/vl.prom"),
    )
    flags = run_settings(
        "--image-store",
        "/flag/store",
        "--min-free-gb",
        "0",
        "--metrics-textfile",
        "/f.prom",
        env=env,
    )
    assert (flags.image_store, flags.min_free_gb, flags.metrics_textfile) == (
        Path("/flag/store"),
        0,
        Path("/f.prom"),
    )
    assert check_settings("--image-store", "/c", env=env).image_store == Path("/c")


@pytest.mark.parametrize("value", ["-1", "1.5", "twenty", "", "٣"])
def test_min_free_gb_is_a_whole_number(value: str) -> None:
    with pytest.raises(UsageError, match="VECTORLAY_MIN_FREE_GB: expected a whole number >= 0"):
        run_settings(env={"VECTORLAY_MIN_FREE_GB": value or " "})


def test_help_shows_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"], env={})
    text = " ".join(capsys.readouterr().out.split())
    assert "VECTORLAY_MIN_FREE_GB; default 20" in text
    assert "VECTORLAY_IMAGE_STORE; default the engine's (/var/lib/containerd for nerdctl)" in text
    assert "VECTORLAY_METRICS_TEXTFILE; default none" in text
    with pytest.raises(SystemExit):
        main(["status", "--help"], env={})
    text = " ".join(capsys.readouterr().out.split())
    assert "VECTORLAY_STATE_DIR; default /var/lib/vectorlay" in text


def test_status_reads_the_state_dir_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["status"], env={"VECTORLAY_STATE_DIR": str(tmp_path)})
    assert code == 3
    assert str(tmp_path / "status.json") in capsys.readouterr().out
