"""The command line, as a user meets it: help, version, check and run on the bundled study."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
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


MINIMAL = Path(__file__).parent / "studies" / "minimal"
EXPORTS = Path(__file__).parent / "fixtures" / "exports"


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_simulate_same_seed_same_bytes(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        seed = "7" if name != "c" else "8"
        res = CliRunner().invoke(
            cli, ["simulate", str(MINIMAL), "--seed", seed, "--out", str(tmp_path / name)]
        )
        assert res.exit_code == 0, res.output
    a, b, c = (_files(tmp_path / n) for n in "abc")
    assert "responses/manifest.json" in a and "truth.csv" in a and "sample.csv" in a
    assert a == b
    assert a["responses/resident.csv"] != c["responses/resident.csv"]


def test_run_simulates_screens_weights_and_estimates(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["run", str(MINIMAL), "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    target = load(MINIMAL).config.sample.target_valid
    assert f"quality: {target} valid responses" in res.output
    assert (tmp_path / "valid_sample").is_dir()
    assert (tmp_path / "simulation" / "responses" / "manifest.json").is_file()
    # the figures table: the minimal study publishes one figure (resident_pays, 80%)
    assert "resident_pays" in res.output and "95% CIs containing the truth" in res.output
    estimates = pl.read_parquet(tmp_path / "estimates" / "estimates.parquet")
    overall = estimates.filter(pl.col("by").is_null())
    assert overall.height == len(load(MINIMAL).indicators)
    weights = pl.read_parquet(tmp_path / "weights" / "weights.parquet")
    assert weights.height == target
    # the impact model under both presets, with its headline table
    assert "Impact model (caict, net" in res.output
    for preset in ("caict", "net"):
        summary = pl.read_csv(tmp_path / "model" / preset / "summary.csv")
        assert set(summary["quantity"]) == set(load(MINIMAL).model.quantity)


def test_import_an_odk_central_export(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        cli,
        [
            "import",
            str(EXPORTS / "odk_central" / "resident.csv"),
            str(MINIMAL),
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "resident" in res.output
    assert (tmp_path / "r" / "manifest.json").is_file()


def test_import_refuses_a_gbk_file_with_its_place(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            str(EXE),
            "import",
            str(EXPORTS / "bad" / "gbk.csv"),
            str(MINIMAL),
            "--group",
            "resident",
            "--out",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "gbk.csv" in proc.stderr and "GBK" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()


def test_import_refuses_a_folder_holding_other_groups(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(cli, ["simulate", str(MINIMAL), "--out", str(tmp_path / "sim")])
    assert res.exit_code == 0, res.output
    folder = tmp_path / "sim" / "responses"  # holds resident and shop
    before = _files(folder)
    res = runner.invoke(
        cli,
        [
            "import",
            str(EXPORTS / "odk_central" / "resident.csv"),
            str(MINIMAL),
            "--out",
            str(folder),
        ],
    )
    assert res.exit_code != 0
    assert "already holds responses of shop" in res.output
    assert _files(folder) == before  # nothing overwritten


def test_run_on_the_bundled_study_end_to_end(tmp_path: Path) -> None:
    """The README's main command: simulate, screen, weight, estimate, model and audit."""
    res = CliRunner().invoke(cli, ["run", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "quality: 11576 valid responses" in res.output
    assert "95% CIs containing the truth" in res.output
    assert "audit of the caict outputs" in res.output
    audit = pl.read_csv(tmp_path / "model" / "caict" / "audit.csv")
    assert audit.height == 48 and "conflict" in audit["verdict"].to_list()
    for preset in ("caict", "net"):
        assert (tmp_path / "model" / preset / "draws.parquet").is_file()


def test_report_rewrites_a_finished_run_identically(tmp_path: Path) -> None:
    """`impactstudy report --from` re-renders from the run's folder: the same page, PDF and
    workbook bytes as the run wrote, and English on request."""
    res = CliRunner().invoke(cli, ["run", str(MINIMAL), "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    again = tmp_path / "again"
    res = CliRunner().invoke(
        cli, ["report", str(MINIMAL), "--from", str(tmp_path), "--out", str(again)]
    )
    assert res.exit_code == 0, res.output
    for name in ("report.html", "report.pdf", "estimates.xlsx"):
        assert (again / name).read_bytes() == (tmp_path / "report" / name).read_bytes(), name
    res = CliRunner().invoke(
        cli, ["report", str(MINIMAL), "--from", str(tmp_path), "--lang", "en", "--no-pdf"]
    )
    assert res.exit_code == 0, res.output
    assert '<html lang="en"' in (tmp_path / "report" / "en" / "report.html").read_text()


def test_report_without_a_run_says_so(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["report", str(MINIMAL), "--from", str(tmp_path)])
    assert res.exit_code != 0
    assert "no valid_sample/ here; run `impactstudy run` first" in res.output
    assert "Traceback" not in res.output


def test_report_from_a_damaged_run_names_what_is_missing(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["run", str(MINIMAL), "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    (tmp_path / "estimates" / "covariance.parquet").unlink()
    res = CliRunner().invoke(cli, ["report", str(MINIMAL), "--from", str(tmp_path), "--no-pdf"])
    assert res.exit_code != 0
    assert "cannot read the run's artifacts" in res.output and "covariance.parquet" in res.output
    assert "Traceback" not in res.output and "bug" not in res.output
