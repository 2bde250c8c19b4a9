"""The `impactstudy` command: a thin shell over the pipeline's stages."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import click

from impactstudy import __version__

if TYPE_CHECKING:
    import polars as pl

    from impactstudy.estimate.batch import Estimates
    from impactstudy.helper import Helper
    from impactstudy.impact import ModelRun
    from impactstudy.quality import ValidSample
    from impactstudy.simulate import Simulation
    from impactstudy.study import Study
    from impactstudy.weighting import WeightedSample

P = ParamSpec("P")
R = TypeVar("R")

EXIT_PROBLEMS = 2
EXIT_INTERNAL = 1

STUDY_ARG_HELP = "Study folder (default: the bundled WeChat 2018 study)."


def _friendly(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn study problems into a listing and exit 2; never show a traceback unless --debug."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        from impactstudy.estimate import DesignError
        from impactstudy.helper import HelperError
        from impactstudy.report import PdfError
        from impactstudy.study import StudyError
        from impactstudy.weighting import WeightingError

        try:
            return fn(*args, **kwargs)
        except StudyError as exc:
            _print_problems(exc.problems)
            sys.exit(EXIT_PROBLEMS)
        except (DesignError, WeightingError, PdfError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_PROBLEMS)
        except HelperError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_INTERNAL)
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except Exception as exc:
            ctx = click.get_current_context(silent=True)
            debug = bool(ctx and ctx.find_root().params.get("debug"))
            if debug:
                traceback.print_exc()
            click.echo(f"error: {type(exc).__name__}: {exc}", err=True)
            if not debug:
                click.echo(
                    "(this is a bug in impactstudy; rerun with --debug for details)", err=True
                )
            sys.exit(EXIT_INTERNAL)

    return wrapper


def _print_problems(problems: Sequence[object]) -> None:
    n = len(problems)
    click.echo(f"{n} problem{'s' if n != 1 else ''}:", err=True)
    for p in problems:
        click.echo(f"  {p}", err=True)


def _study_path(study: str | None) -> Path:
    from impactstudy.study import bundled_study

    return Path(study) if study else bundled_study()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="impactstudy")
@click.option("--debug", is_flag=True, help="Show tracebacks of internal errors.")
def cli(debug: bool) -> None:
    """Measure the economic and employment impact of a digital platform ecosystem.

    A study is a folder (study.toml, XLSForm questionnaires, frames, indicators, model,
    history). Without a STUDY argument the commands use the bundled WeChat 2018 study.

    \b
    Examples:
      impactstudy check
      impactstudy run
      impactstudy check path/to/my-study
    """


@cli.command()
@click.argument("study", required=False, type=click.Path(file_okay=False))
@_friendly
def check(study: str | None) -> None:
    """Validate a study and print a summary; list every problem if there are any.

    Exit code 0 when the study is clean, 2 when it has problems.

    \b
    Example:
      impactstudy check path/to/my-study
    """
    from impactstudy.study import load

    s = load(_study_path(study))
    click.echo(summary(s))


def _simulate(study: Study, seed: int | None, helper: Helper | None = None) -> Simulation:
    """Run the simulator with a progress bar (stderr), turning its errors into messages."""
    from impactstudy.simulate import SimulationError, simulate, steps

    with click.progressbar(
        length=steps(study), label="simulate", file=sys.stderr, show_pos=True
    ) as bar:
        try:
            return simulate(study, seed, progress=lambda label: bar.update(1), helper=helper)
        except SimulationError as exc:
            raise click.ClickException(str(exc)) from None


@cli.command()
@click.argument("study", required=False, type=click.Path(file_okay=False))
@click.option(
    "--seed",
    type=int,
    default=None,
    help="Random seed (default: simulation.toml's). Same seed, same bytes.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="out/simulation",
    show_default=True,
    help="Folder for the responses and the truth.",
)
@_friendly
def simulate(study: str | None, seed: int | None, out: str) -> None:
    """Simulate the study: a synthetic population calibrated to the published figures, the
    fieldwork that samples it (nonresponse, modes, paradata, bad respondents), the
    responses, and the truth.

    \b
    Example:
      impactstudy simulate --seed 20181001 --out out/simulation
    """
    from impactstudy.study import load

    s = load(_study_path(study))
    sim = _simulate(s, seed)
    files = sim.write(s, out)
    units = sum(p.frame.height for p in sim.populations.values())
    click.echo(
        f"seed {sim.seed}: {len(sim.responses)} submissions from {units:,} synthetic units "
        f"in {len(sim.populations)} groups"
    )
    for g in sim.responses:
        click.echo(f"  {g.group:<15} {len(g):>6} submissions")
    click.echo(f"wrote {len(files)} files to {out}/")


@cli.command(name="import")
@click.argument("path", type=click.Path(exists=True))
@click.argument("study", required=False, type=click.Path(file_okay=False))
@click.option(
    "--group",
    default=None,
    help="The questionnaire the file answers (default: from its name, form id or columns).",
)
@click.option(
    "--lenient",
    is_flag=True,
    help="Flag bad cells (null, with a _flags column) instead of refusing the file.",
)
@click.option(
    "--timezone",
    default="UTC",
    show_default=True,
    help="Time zone of date-times exported without a UTC offset.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="out/responses",
    show_default=True,
    help="Folder for the Responses.",
)
@_friendly
def import_(
    path: str, study: str | None, group: str | None, lenient: bool, timezone: str, out: str
) -> None:
    """Read submissions exported by ODK Central or KoboToolbox (CSV, XLSX, zip), or our own
    Responses folder, check them against the study's questionnaires, and write Responses.

    Every problem (encoding, unknown columns, values outside a choice list, duplicate
    instanceIDs) is listed with its file, row and column; exit code 2.

    \b
    Example:
      impactstudy import exports/user.csv --group user --out out/responses
    """
    from impactstudy.ingest import IngestError, read_responses, write_responses
    from impactstudy.study import load

    s = load(_study_path(study))
    try:
        responses = read_responses(Path(path), s, lenient=lenient, group=group, timezone=timezone)
    except IngestError as exc:
        _print_problems(exc.problems)
        sys.exit(EXIT_PROBLEMS)
    _refuse_other_groups(Path(out), set(responses.groups))
    files = write_responses(responses, s, Path(out))
    problems = responses.provenance.get("problems")
    flagged = len(problems) if lenient and isinstance(problems, list) else 0
    for g in responses:
        click.echo(f"  {g.group:<15} {len(g):>6} submissions")
    if flagged:
        noun = "problem" if flagged == 1 else "problems"
        click.echo(f"{flagged} {noun} found and flagged: see the _flags column")
    click.echo(f"wrote {len(files)} files to {out}/")


def _refuse_other_groups(out: Path, groups: set[str]) -> None:
    """One Responses folder has one manifest: importing into a folder that holds other
    groups would orphan them."""
    import json

    manifest = out / "manifest.json"
    if not manifest.is_file():
        return
    try:
        held = set(json.loads(manifest.read_text(encoding="utf-8")).get("groups", {}))
    except (ValueError, AttributeError):
        held = set()
    others = sorted(held - groups)
    if others:
        raise click.ClickException(
            f"{out} already holds responses of {', '.join(others)}; import into another "
            "--out folder (one folder per export)"
        )


@cli.command()
@click.argument("study", required=False, type=click.Path(file_okay=False))
@click.option("--seed", type=int, default=None, help="Seed of the simulation.")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="out",
    show_default=True,
    help="Folder for the run's artifacts.",
)
@click.option(
    "--lang", default=None, help="Report language (zh or en; default: the study's default)."
)
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=1),
    default=None,
    help="Processes to use: 1 runs everything in this one; default 2 where two cores are "
    "free. Same bytes either way.",
)
@_friendly
def run(study: str | None, seed: int | None, out: str, lang: str | None, jobs: int | None) -> None:
    """Run the whole study: check, simulate, screen, weight, estimate, model (both presets), audit
    and report (HTML, PDF, XLSX), with a progress bar per stage on stderr.

    \b
    Example:
      impactstudy run --out out/
    """
    from threadpoolctl import threadpool_limits

    from impactstudy.helper import ONE_THREAD, Helper, default_jobs
    from impactstudy.study import load

    # One thread each for BLAS and Polars, set before either loads (a user's settings win): the
    # last bits of a threaded BLAS product depend on the thread count (same seed, same bytes on
    # any machine), and with a helper each process has a core of its own; Polars' threads gain
    # nothing on the run's many small queries (docs/benchmarks.md).
    for key, value in ONE_THREAD.items():
        os.environ.setdefault(key, value)
    path = _study_path(study)
    processes = (jobs or default_jobs()) - 1
    if not path.is_dir():  # the study's own message, before any process is started
        load(path)
    with Helper(path, processes) if processes else nullcontext(None) as helper:
        s = load(path)  # while the helper loads its own copy
        if helper is not None:
            helper.check(s)
        with threadpool_limits(limits=1, user_api="blas"):  # NumPy is loaded by now
            _run(s, seed, out, lang, helper)


def _run(s: Study, seed: int | None, out: str, lang: str | None, helper: Helper | None) -> None:
    """`run` on a loaded study; a helper, when given, builds part of the populations, makes the
    model's input-output draws while this process estimates, and writes the workbook while this
    process draws the charts and typesets the report."""
    from impactstudy.estimate import estimate_all
    from impactstudy.impact import io_draws, run_presets
    from impactstudy.quality import screen
    from impactstudy.report import ReportInputs, write_report
    from impactstudy.weighting import weight

    click.echo(summary(s))
    sim = _simulate(s, seed, helper)
    ahead = helper.submit_study(io_draws) if helper is not None and s.model is not None else None
    sim.write(s, Path(out) / "simulation")
    stages = ["screen", "weight", "estimate", "model", "audit", "report"]
    with click.progressbar(
        length=len(stages),
        label="analyse",
        file=sys.stderr,
        show_pos=True,
        item_show_func=lambda item: item,
    ) as bar:
        bar.update(0, stages[0])
        valid = screen(sim.responses, s)
        valid.write(Path(out) / "valid_sample")
        bar.update(1, stages[1])
        weighted = weight(valid, s, seed=sim.seed)
        weighted.write(Path(out) / "weights")
        bar.update(1, stages[2])
        estimates = estimate_all(weighted, s, by=[s.config.sample.stratify_by])
        estimates.write(Path(out) / "estimates")
        bar.update(1, stages[3])
        io = ahead.result() if ahead is not None else None
        runs = run_presets(s, estimates, io=io) if s.model is not None else {}
        for preset, model_run in runs.items():
            model_run.write(Path(out) / "model" / preset)
        bar.update(1, stages[4])
        findings = _outputs_audit(runs, s)
        if findings is not None:
            _write_findings(findings, Path(out) / "model" / "caict" / "audit.csv")
        bar.update(1, stages[5])
        inputs = ReportInputs(
            study=s,
            valid=valid,
            weighted=weighted,
            estimates=estimates,
            runs=runs,
            audit=findings,
            truth=sim.truth,
            seed=sim.seed,
        )
        files = write_report(
            inputs,
            Path(out) / "report",
            lang=lang or s.config.study.default_language,
            executor=helper,
        )
        bar.update(1, "done")
    click.echo("")
    click.echo(f"simulate: seed {sim.seed}, {len(sim.responses)} submissions")
    click.echo(f"quality: {len(valid)} valid responses")
    click.echo(valid_table(valid, s))
    click.echo("")
    click.echo("weighting:")
    click.echo(weighting_table(weighted))
    click.echo("")
    click.echo(figures_table(estimates, sim.truth, s))
    if runs:
        click.echo("")
        click.echo(model_table(runs, s))
    if findings is not None:
        counts = findings.group_by("verdict").len()
        tally = dict(zip(counts["verdict"], counts["len"], strict=True))
        click.echo(
            f"audit of the caict outputs in place of the report's figures: "
            f"{findings.height} checks, {tally.get('conflict', 0)} conflicts, "
            f"{tally.get('tension', 0)} tensions ({out}/model/caict/audit.csv)"
        )
    click.echo("")
    click.echo(f"report: {files.html}, {files.pdf}, {files.xlsx}; every artifact is in {out}/")


@cli.command()
@click.argument("study", required=False, type=click.Path(file_okay=False))
@click.option(
    "--from",
    "source",
    type=click.Path(file_okay=False),
    default="out",
    show_default=True,
    help="The folder of a finished `impactstudy run`.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder for the report (default: <from>/report, or <from>/report/<lang>).",
)
@click.option("--lang", default=None, help="zh or en (default: the study's default).")
@click.option("--no-pdf", is_flag=True, help="Write the HTML and XLSX only.")
@_friendly
def report(study: str | None, source: str, out: str | None, lang: str | None, no_pdf: bool) -> None:
    """Write the report (HTML, PDF, XLSX) again from a finished run's folder, e.g. in another
    language; nothing is simulated or estimated again (the weights are recomputed from the valid
    sample, which is deterministic).

    \b
    Example:
      impactstudy report --from out --lang en
    """
    import json

    import polars as pl

    from impactstudy.estimate import Estimates
    from impactstudy.impact import ModelRun
    from impactstudy.quality import ValidSample
    from impactstudy.report import ReportInputs, write_report
    from impactstudy.study import load
    from impactstudy.weighting import weight

    s = load(_study_path(study))
    root = Path(source)
    for part in ("valid_sample", "estimates"):
        if not (root / part).is_dir():
            raise click.ClickException(f"{root}: no {part}/ here; run `impactstudy run` first")
    sim_meta = root / "simulation" / "simulation.json"
    seed = json.loads(sim_meta.read_text())["seed"] if sim_meta.is_file() else None
    try:
        valid = ValidSample.read(root / "valid_sample")
        estimates = Estimates.read(root / "estimates")
        runs = {
            p: ModelRun.read(root / "model" / p)
            for p in (s.model.model.presets if s.model is not None else [])
            if (root / "model" / p).is_dir()
        }
    except (OSError, ValueError) as exc:  # a folder not written by `run`, or cut short
        raise click.ClickException(f"{root}: cannot read the run's artifacts: {exc}") from None
    weighted = weight(valid, s, seed=seed or 0)
    findings = _outputs_audit(runs, s)
    truth_file = root / "simulation" / "truth.parquet"
    truth = pl.read_parquet(truth_file) if truth_file.is_file() else None
    language = lang or s.config.study.default_language
    target = Path(out) if out else root / "report" / (language if lang else "")
    inputs = ReportInputs(s, valid, weighted, estimates, runs, findings, truth, seed)
    files = write_report(inputs, target, lang=language, pdf=not no_pdf)
    written = [files.html, files.pdf, files.xlsx, files.parquet]
    click.echo("report: " + ", ".join(str(f) for f in written if f is not None))


@cli.command()
@click.argument("figures", required=False, type=click.Path(dir_okay=False))
@click.option(
    "--rules",
    "rules_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Rules TOML (default: the bundled WeChat 2018 rules).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the findings table to this CSV file.",
)
@_friendly
def audit(figures: str | None, rules_path: str | None, out: str | None) -> None:
    """Check identities among published figures: multiples against CAGRs, shares against
    denominators, parts against totals, growth chains.

    FIGURES is a CSV with columns id and value (text such as "约11%", "2235万" is parsed;
    optional unit and quote columns). Without it the bundled figures of the 2019 WeChat
    Employment Impact Report (CAICT and Tencent) are audited. Conflicts are listed first.
    Exit code 0 whatever the verdicts; 2 on bad input.

    \b
    Examples:
      impactstudy audit
      impactstudy audit my_figures.csv --rules my_rules.toml --out findings.csv
    """
    from impactstudy.impact.audit import AuditError, bundled_figures, load_rules, read_figures
    from impactstudy.impact.audit import audit as run_audit

    path = Path(figures) if figures else bundled_figures()
    try:
        rules = load_rules(rules_path)
        findings = run_audit(read_figures(path), rules, source=str(path))
        if out:
            _write_findings(findings, Path(out))
    except AuditError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_PROBLEMS)
    except OSError as exc:
        click.echo(f"error: cannot write {out}: {exc.strerror or exc}", err=True)
        sys.exit(EXIT_PROBLEMS)
    counts = {v: int((findings["verdict"] == v).sum()) for v in ("conflict", "tension")}
    n = findings.height
    click.echo(
        f"{n} check{'s' if n != 1 else ''} of {path.name} against {Path(rules.source).name}: "
        f"{counts['conflict']} conflict, {counts['tension']} tension, "
        f"{n - counts['conflict'] - counts['tension']} consistent"
    )
    for row in findings.iter_rows(named=True):
        click.echo(
            f"{row['verdict']:<10}  {row['check']}  [{row['kind']}: {', '.join(row['figures'])}]"
        )
        click.echo(f"            {row['explanation_en']}")
        click.echo(f"            {row['explanation_zh']}")


def weighting_table(weighted: WeightedSample) -> str:
    """Per group: n, population, weight range and Kish's design effect of weighting."""
    lines = [f"{'group':<16}{'n':>7}{'population':>16}{'min w':>12}{'max w':>12}{'deff_w':>8}"]
    for row in weighted.summary().iter_rows(named=True):
        lines.append(
            f"{row['group']:<16}{row['n']:>7,}{row['population']:>16,.0f}"
            f"{row['min_weight']:>12,.1f}{row['max_weight']:>12,.1f}{row['deff_weighting']:>8.3f}"
        )
    return "\n".join(lines)


def figures_table(estimates: Estimates, truth: pl.DataFrame | None, study: Study) -> str:
    """Every published survey figure: published value, estimate, 95% CI, n, and (for simulated
    data) the simulator's truth, with whether the interval contains it."""
    import polars as pl

    table = estimates.overall().filter(pl.col("published_text").is_not_null())
    if truth is not None:
        table = table.join(
            truth.select("indicator", pl.col("value").alias("truth")), on="indicator", how="left"
        )
    lines = [
        "Published survey figures, reproduced (95% CI; truth = the simulated population's value)",
        f"{'figure':<8}{'group':<14}{'published':>10}{'estimate':>10}{'95% CI':>20}{'n':>7}"
        + (f"{'truth':>10}  in CI" if truth is not None else ""),
    ]
    covered = 0
    for r in table.iter_rows(named=True):
        ci = f"[{_num(r['ci_low'])}, {_num(r['ci_high'])}]"
        line = (
            f"{r['indicator']:<8}{r['groups'][:13]:<14}"
            f"{_published(r):>10}"
            f"{_num(r['estimate']):>10}{ci:>20}{r['n']:>7,}"
        )
        if truth is not None and r["truth"] is not None:
            inside = r["ci_low"] <= r["truth"] <= r["ci_high"]
            covered += inside
            line += f"{_num(r['truth']):>10}  {'yes' if inside else 'NO'}"
        lines.append(line)
    if truth is not None:
        everything = estimates.overall().join(
            truth.select("indicator", pl.col("value").alias("truth")), on="indicator"
        )
        all_in = int(
            (
                (everything["truth"] >= everything["ci_low"])
                & (everything["truth"] <= everything["ci_high"])
            ).sum()
        )
        lines.append(
            f"95% CIs containing the truth: {covered} of {table.height} published figures, "
            f"{all_in} of {everything.height} indicators"
        )
    return "\n".join(lines)


def model_table(runs: Mapping[str, ModelRun], study: Study) -> str:
    """The headline model outputs: median and 5-95% interval under each preset, and the
    published value where the quantity reproduces one."""
    import polars as pl

    presets = list(runs)
    first = runs[presets[0]].summary
    heads = first.filter(pl.col("headline") | pl.col("published").is_not_null())
    width = 28
    lines = [
        f"Impact model ({', '.join(presets)}; {runs[presets[0]].provenance.get('draws')} draws, "
        "median [5%, 95%])",
        f"{'quantity':<32}" + "".join(f"{p:>{width}}" for p in presets) + f"{'published':>12}",
    ]
    for name in heads["quantity"].to_list():
        cells = []
        for p in presets:
            r = runs[p].summary.filter(pl.col("quantity") == name).row(0, named=True)
            cells.append(
                f"{_amount(r['median'], r['unit'])} "
                f"[{_amount(r['p05'], r['unit'])}, {_amount(r['p95'], r['unit'])}]"
            )
        row = first.filter(pl.col("quantity") == name).row(0, named=True)
        pub = row["published"]
        lines.append(
            f"{name[:31]:<32}"
            + "".join(f"{c:>{width}}" for c in cells)
            + f"{'' if pub is None else _amount(pub, row['unit']):>12}"
        )
    return "\n".join(lines)


def _amount(x: float, unit: str) -> str:
    """Persons in 万, yuan in 亿, shares in percent."""
    if unit in ("persons", "人"):
        return f"{x / 1e4:,.0f}万"
    if unit in ("yuan", "元"):
        return f"{x / 1e8:,.0f}亿"
    if unit == "1":
        return f"{100 * x:.1f}%"
    return f"{x:.3g}"


def _published(row: dict[str, object]) -> str:
    """The published value with its relation (~11.0, >70.0), or its text when it has no value."""
    value = row["published_value"]
    if not isinstance(value, float):
        return str(row["published_text"])
    mark = {"=": "", "approx": "~", ">": ">", ">=": ">=", "<": "<", "<=": "<="}
    return f"{mark.get(str(row['relation']), '')}{_num(value)}"


def _num(x: float | None) -> str:
    """A figure in a few significant digits: 68.1, 0.213, 5.46e+06."""
    if x is None:
        return ""
    if abs(x) >= 1e5:
        return f"{x:.3g}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.3g}" if abs(x) < 1 else f"{x:.1f}"


def _outputs_audit(runs: Mapping[str, ModelRun], study: Study) -> pl.DataFrame | None:
    """The consistency audit of the caict outputs in place of the published figures, when the
    model names the figures its quantities stand for; else None."""
    from impactstudy.impact import audit_outputs

    model = study.model
    if "caict" not in runs or model is None or not any(q.figures for q in model.quantity.values()):
        return None
    return audit_outputs(runs["caict"], study)


def _write_findings(findings: pl.DataFrame, path: Path) -> None:
    """The audit's findings as CSV (the list of figure ids joined by '; ')."""
    findings.with_columns(findings["figures"].list.join("; ")).write_csv(path)


def valid_table(valid: ValidSample, study: Study) -> str:
    """Valid responses by province (rows) and group (columns), with totals."""
    import polars as pl

    table = valid.table()
    wide = table.pivot(on="group", index="province", values="valid", aggregate_function="sum")
    groups = [g for g in study.groups if g in wide.columns]
    wide = wide.fill_null(0).with_columns(pl.sum_horizontal(groups).alias("total"))
    order = {p.code: i for i, p in enumerate(study.frames.geography)}
    wide = wide.sort(pl.col("province").replace_strict(order, default=len(order)))
    header = f"{'province':<14}" + "".join(f"{g[:14]:>15}" for g in [*groups, "total"])
    lines = [header]
    for row in wide.iter_rows(named=True):
        lines.append(
            f"{row['province'] or '':<14}" + "".join(f"{row[g]:>15,}" for g in [*groups, "total"])
        )
    totals = [int(wide[g].sum()) for g in [*groups, "total"]]
    lines.append(f"{'total':<14}" + "".join(f"{t:>15,}" for t in totals))
    return "\n".join(lines)


def summary(s: object) -> str:
    """A few lines describing a loaded study: groups, items, indicators, frames."""
    from impactstudy.study import Study

    assert isinstance(s, Study)
    lang = s.config.study.default_language
    lines = [
        f"{s.title(lang)} ({s.id}, {s.config.study.year})",
        f"  fieldwork {s.config.fieldwork.start} to {s.config.fieldwork.end}, modes "
        f"{', '.join(s.config.fieldwork.modes)}; languages {', '.join(s.languages)}",
        f"  sample: {s.config.sample.target_valid} valid responses, stratified by "
        f"{s.config.sample.stratify_by}",
        "  groups:",
    ]
    for gid, g in s.groups.items():
        n_ind = sum(1 for i in s.indicators.values() if gid in i.groups)
        pop = s.frames.populations.get(gid)
        pop_text = f"population {pop.population:,.0f} {pop.unit}" if pop else ""
        lines.append(
            f"    {gid:<15} {g.label.get(lang, gid)}: {len(g.form.questions)} items, "
            f"target {g.spec.sample.target_valid}, {n_ind} indicators, {pop_text}"
        )
    published = sum(1 for i in s.indicators.values() if i.spec.published is not None)
    lines.append(f"  indicators: {len(s.indicators)} ({published} with a published value)")
    lines.append(
        f"  frames: {len(s.frames.geography)} provinces, "
        f"{len(s.frames.populations)} populations, "
        f"{sum(len(m) for m in s.frames.margins.values())} margins, "
        f"{len(s.frames.statistics)} statistics"
    )
    lines.append(
        f"  model: {len(s.model.quantity)} quantities, {len(s.model.param)} "
        f"parameters; history: {len(s.history)} points"
    )
    return "\n".join(lines)


def main() -> None:
    cli(prog_name="impactstudy")


if __name__ == "__main__":  # pragma: no cover
    main()
