"""The command line, as a user meets it: help, version, check and run on the bundled study."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from impactstudy import __version__
from impactstudy.cli import cli
from impactstudy.study import bundled_study, load

EXE = Path(sys.executable).parent / "impactstudy"


def test_help_lists_the_commands() -> None:
    res = CliRunner().invoke(cli, ["--help"])
    assert res.exit_code == 0
    for command in ("check", "run"):
        assert command in res.output


def test_version() -> None:
    res = CliRunner().invoke(cli, ["--version"])
    assert res.exit_code == 0
    assert __version__ in res.output


@pytest.mark.parametrize("command", sorted(cli.commands))  # type: ignore[attr-defined]
def test_every_command_has_help_with_an_example(command: str) -> None:
    res = CliRunner().invoke(cli, [command, "--help"])
    assert res.exit_code == 0
    assert "Example" in res.output
    assert f"impactstudy {command}" in res.output


def test_check_on_the_bundled_study_is_clean() -> None:
    res = CliRunner().invoke(cli, ["check"])
    assert res.exit_code == 0, res.output
    assert "11576" in res.output
    for group in load(bundled_study()).groups:
        assert group in res.output


def test_run_checks_and_says_what_comes_next() -> None:
    res = CliRunner().invoke(cli, ["run"])
    assert res.exit_code == 0, res.output
    assert "the study is valid" in res.output


def test_a_missing_study_folder_is_a_problem_not_a_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(EXE), "check", str(tmp_path / "nowhere")], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2
    assert "not a study folder" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_the_installed_command_works_from_any_folder(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(EXE), "check"], capture_output=True, text=True, check=False, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "wechat-2018" in proc.stdout
