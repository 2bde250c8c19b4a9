"""Cross-file checks of the study loader, each shown on a one-line change to the minimal study.

(The corpus in bad_studies/ covers whole broken files; these are the finer rules.)
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from impactstudy.study import StudyError, load

MINIMAL = Path(__file__).parent / "studies" / "minimal"


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(text)


Change = Callable[[Path], None]

CASES: list[tuple[str, Change, str, str]] = [
    (
        "margin over a calculate: categories are the literals it yields",
        lambda d: append(
            d / "frames" / "margins.csv",
            "resident,age_band,young,0.4,Test\nresident,age_band,old,0.6,Test\n",
        ),
        "frames/margins.csv",
        "category 'old' is not a value the calculation of 'age_band' yields",
    ),
    (
        "margin over a calculate missing a category",
        lambda d: append(d / "frames" / "margins.csv", "resident,age_band,young,1.0,Test\n"),
        "frames/margins.csv",
        "margin resident/age_band has no share for older",
    ),
    (
        "margin over a number",
        lambda d: append(d / "frames" / "margins.csv", "resident,age,30,1.0,Test\n"),
        "frames/margins.csv",
        "variable 'age' is a integer; margins need a select_one",
    ),
    (
        "study title in one language only",
        lambda d: edit(
            d / "study.toml",
            'title = { zh = "最小示例研究", en = "Minimal example study" }',
            'title = { zh = "最小示例研究" }',
        ),
        "study.toml",
        "missing in language 'en'",
    ),
    (
        "parameter label in one language only",
        lambda d: edit(
            d / "model.toml",
            'label = { zh = "无谓效应", en = "Deadweight" }',
            'label = { zh = "无谓效应" }',
        ),
        "model.toml",
        "missing in language 'en'",
    ),
    (
        "triangular prior with its mode outside the range (mode 0 too)",
        lambda d: edit(d / "model.toml", "mode = 1.0", "mode = 0"),
        "model.toml",
        "mode must lie between low and high",
    ),
    (
        "trim bounds in the wrong order",
        lambda d: append(d / "study.toml", "\n[weighting]\ntrim = { lower = 0.5, upper = 0.4 }\n"),
        "study.toml",
        "must be below upper",
    ),
    (
        "attention check keys are spelt as in the file",
        lambda d: edit(d / "study.toml", "pass = ", "pass_ = "),
        "study.toml",
        "unknown key",
    ),
    (
        "exponents are for model formulas, not questionnaire expressions",
        lambda d: edit(
            d / "indicators.toml",
            "${incr_spend}, 0)",
            "${incr_spend} * 1e3, 0)",
        ),
        "indicators.toml",
        "XPath numbers have no exponent",
    ),
]


@pytest.mark.parametrize(
    ("change", "file", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_check(tmp_path: Path, change: Change, file: str, message: str) -> None:
    study = tmp_path / "study"
    shutil.copytree(MINIMAL, study)
    change(study)
    with pytest.raises(StudyError) as err:
        load(study)
    found = [p for p in err.value.problems if p.file == file and message in p.message]
    assert found, [str(p) for p in err.value.problems]


def test_model_formulas_may_use_exponents(tmp_path: Path) -> None:
    study = tmp_path / "study"
    shutil.copytree(MINIMAL, study)
    edit(study / "model.toml", "* 12 *", "* 1.2e1 *")
    assert "consumption" in load(study).model.quantity
