"""Broken studies are refused with every problem named and placed, never with a traceback.

Each folder under `bad_studies/` is one broken study, written as an overlay on the valid
`studies/minimal`: the files that differ (same relative paths), and `case.toml` with

    description = "..."
    delete = ["frames/margins.csv"]    # optional: files removed from the copy
    [[expect]]                         # one per problem that must be reported
    file = "questionnaires/resident.xlsx"
    sheet = "survey"                   # optional, as are row, column and key
    row = 5
    column = "relevant"
    message = "malformed"              # a substring of the message

`load()` must raise StudyError listing every expected problem, each at exactly the given
place, and every problem it lists must name its file. `impactstudy check` on the same folder
must exit 2 and print each of them with its place, without a traceback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from impactstudy.problems import Problem
from impactstudy.study import Study, StudyError, load

HERE = Path(__file__).parent
MINIMAL = HERE / "studies" / "minimal"
CORPUS = HERE / "bad_studies"
EXE = Path(sys.executable).parent / "impactstudy"
PLACE = ("file", "sheet", "row", "column", "key")
CASE_KEYS = {"description", "delete", "expect"}
EXPECT_KEYS = {*PLACE, "message"}


@dataclass(frozen=True)
class Case:
    name: str
    folder: Path
    description: str
    delete: tuple[str, ...]
    expect: tuple[dict[str, Any], ...]

    @property
    def overlay(self) -> list[Path]:
        """The files that replace the minimal study's, relative to the case folder."""
        return sorted(
            p.relative_to(self.folder)
            for p in self.folder.rglob("*")
            if p.is_file() and p.name != "case.toml"
        )

    def build(self, dest: Path) -> Path:
        """The minimal study with this case's files laid over it and its deletions made."""
        shutil.copytree(MINIMAL, dest)
        for rel in self.overlay:
            shutil.copyfile(self.folder / rel, dest / rel)
        for rel in self.delete:
            (dest / rel).unlink()
        return dest


def read_case(folder: Path) -> Case:
    spec = tomllib.loads((folder / "case.toml").read_text(encoding="utf-8"))
    return Case(
        name=folder.name,
        folder=folder,
        description=spec.get("description", ""),
        delete=tuple(spec.get("delete", ())),
        expect=tuple(spec.get("expect", ())),
    )


CASES = [read_case(p.parent) for p in sorted(CORPUS.glob("*/case.toml"))]
IDS = [c.name for c in CASES]


def matches(problem: Problem, expect: dict[str, Any]) -> bool:
    """The problem is at every place attribute the expectation gives and its message
    contains the expected text."""
    return all(getattr(problem, k) == expect[k] for k in PLACE if k in expect) and (
        expect["message"] in problem.message
    )


def assert_reported(case: Case, problems: list[Problem]) -> None:
    listing = "\n".join(f"  {p}" for p in problems)
    for e in case.expect:
        assert any(matches(p, e) for p in problems), f"expected {e}\nbut got:\n{listing}"


def refused(path: Path) -> list[Problem]:
    with pytest.raises(StudyError) as err:
        load(path)
    return err.value.problems


# --- the corpus itself ------------------------------------------------------------------------


def test_the_minimal_study_loads_clean() -> None:
    study = load(MINIMAL)
    assert isinstance(study, Study)
    assert list(study.groups) == ["resident", "shop"]
    assert study.config.groups["resident"].unit == "person"
    assert study.config.groups["shop"].unit == "organisation"
    assert study.languages == ["zh", "en"]
    assert [p.code for p in study.frames.geography] == ["beijing", "shanghai", "guangdong"]
    assert set(study.frames.margins["resident"]) == {"province", "gender"}
    resident = study.groups["resident"].form
    types = {f.type for f in resident.fields.values()}
    assert {"select_one", "select_multiple", "integer", "calculate", "group", "repeat"} <= types
    assert resident.fields["child_age"].repeats == ("children",)
    assert resident.fields["spending"].relevant is not None
    assert study.indicators["resident_retail"].domain is not None


def test_the_corpus_has_enough_cases_and_nothing_else() -> None:
    assert len(CASES) >= 18
    assert sum(len(c.expect) > 1 for c in CASES) >= 1
    strays = [p.name for p in CORPUS.iterdir() if not (p / "case.toml").is_file()]
    assert not strays, f"folders without case.toml: {strays}"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_each_case_is_well_formed(case: Case) -> None:
    spec = tomllib.loads((case.folder / "case.toml").read_text(encoding="utf-8"))
    assert set(spec) <= CASE_KEYS, "unknown key in case.toml"
    assert case.description, "a case says what is broken"
    assert case.expect, "a case expects at least one problem"
    for e in case.expect:
        assert set(e) <= EXPECT_KEYS, f"unknown key in [[expect]]: {e}"
        assert e.get("file") and e.get("message"), f"an expectation names file and message: {e}"
    for rel in [*case.overlay, *map(Path, case.delete)]:
        assert (MINIMAL / rel).is_file(), f"{rel} is not a file of the minimal study"
    assert case.overlay or case.delete, "a case changes something"


# --- loading and checking -------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str


def _check(path: Path) -> Run:
    res = subprocess.run(
        [str(EXE), "check", str(path)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    )
    return Run(res.returncode, res.stdout, res.stderr)


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every case built once, as a complete study folder; and the minimal study itself."""
    root = tmp_path_factory.mktemp("bad_studies")
    return {MINIMAL.name: MINIMAL} | {c.name: c.build(root / c.name) for c in CASES}


def _read_by_selected_tests(session: pytest.Session) -> set[str]:
    """The studies whose `check` run a selected test reads (all, unless run with -k)."""
    names: set[str] = set()
    for item in session.items:
        if item.path != Path(__file__) or not item.name.startswith("test_check"):
            continue
        callspec = getattr(item, "callspec", None)
        case = callspec.params.get("case") if callspec else None
        names.add(case.name if isinstance(case, Case) else MINIMAL.name)
    return names


@pytest.fixture(scope="module")
def checks(
    request: pytest.FixtureRequest, studies: dict[str, Path]
) -> Iterator[dict[str, Future[Run]]]:
    """`impactstudy check` on every case, started at once and run side by side (a run is
    mostly interpreter start-up), while the loading tests go on."""
    wanted = _read_by_selected_tests(request.session)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        yield {n: pool.submit(_check, path) for n, path in studies.items() if n in wanted}


@pytest.mark.usefixtures("checks")  # start the command-line runs now, in the background
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_load_reports_every_expected_problem_at_its_place(
    case: Case, studies: dict[str, Path]
) -> None:
    problems = refused(studies[case.name])
    assert_reported(case, problems)
    unplaced = [str(p) for p in problems if not p.file]
    assert not unplaced, f"problems without a file: {unplaced}"


def printed(expect: dict[str, Any], line: str) -> bool:
    """The line shows the expected problem: `file, sheet s, row r, column c, key k: message`."""
    place, _, message = line.strip().partition(": ")
    parts = place.split(", ")
    wanted = [expect["file"]] + [f"{k} {expect[k]}" for k in PLACE[1:] if k in expect]
    return all(w in parts for w in wanted) and expect["message"] in message


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_check_exits_2_and_prints_each_problem_with_its_place(
    case: Case, checks: dict[str, Future[Run]]
) -> None:
    run = checks[case.name].result()
    output = run.stdout + run.stderr
    assert "Traceback" not in output
    assert run.returncode == 2, output
    for e in case.expect:
        assert any(printed(e, line) for line in run.stderr.splitlines()), (
            f"{e} is not printed:\n{run.stderr}"
        )


def test_check_on_the_minimal_study_exits_0(checks: dict[str, Future[Run]]) -> None:
    run = checks[MINIMAL.name].result()
    assert run.returncode == 0, run.stdout + run.stderr
    assert "minimal" in run.stdout
