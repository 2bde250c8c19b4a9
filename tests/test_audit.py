"""The consistency audit: known conflicts and regression anchors of the WeChat report, the
number parser on the report's formats, sums to 100%, model outputs, the CLI, bad input.

Expected numbers are hand calculations from the published figures (impact-model.md)."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from impactstudy.cli import cli
from impactstudy.impact.audit import (
    AuditError,
    audit,
    bundled_figures,
    bundled_rules,
    figures_table,
    load_rules,
    parse_printed,
    read_figures,
)

FIX = Path(__file__).parent / "fixtures" / "audit"
SEED = Path(__file__).parent / "fixtures" / "seed" / "figures.csv"


@pytest.fixture(scope="module")
def seed_findings() -> pl.DataFrame:
    return audit(read_figures(SEED))


def _row(df: pl.DataFrame, check: str) -> dict[str, object]:
    rows = df.filter(pl.col("check") == check).to_dicts()
    assert len(rows) == 1, check
    return rows[0]


# ------------------------------------------------------------------ the five known conflicts

# (check, verdict, implied, stated, implied interval or None). "tension": fails at the printed
# values but values within their rounding satisfy it; "conflict": no such values.
KNOWN_CONFLICTS = [
    # 2.5x over 4 years: 2.5^(1/4) - 1 = 25.74% < 26%; 2.45..2.55 -> 25.11%..26.37%
    ("info_multiple_vs_cagr", "tension", 2.5**0.25 - 1, 0.26, (2.45**0.25 - 1, 2.55**0.25 - 1)),
    # 5万亿 / 6% = 83.33万亿 vs NBS 90.03万亿; 4.5..5.5万亿 / 6.5%..5.5% = 69.2..100万亿
    ("info_share_of_gdp", "tension", 5e12 / 0.06, 90.03e12, (4.5e12 / 0.065, 5.5e12 / 0.055)),
    # (2402 - 2108) / (2402/1.15 - 2108/1.10) - 1 = 294 / 172.33 - 1 = 70.6%, vs <= 26%
    ("info_nontraffic_growth", "tension", 294 / (2402 / 1.15 - 2108 / 1.10) - 1, 0.26, None),
    # 11% x 25% x 10.82亿 = 2976万 > 2235万; lowest 10.5% x 24.5% x 10.815亿 = 2782万
    ("jobseekers_vs_jobs", "conflict", 0.11 * 0.25 * 10.82e8, 2235e4,
     (0.105 * 0.245 * 10.815e8, 0.115 * 0.255 * 10.825e8)),
    # 5000亿 > 4198亿
    ("miniprogram_value_vs_traditional", "conflict", 5000e8, 4198e8, (4999.5e8, 5000.5e8)),
]  # fmt: skip


@pytest.mark.parametrize(("check", "verdict", "implied", "stated", "interval"), KNOWN_CONFLICTS)
def test_known_conflicts_found(
    seed_findings: pl.DataFrame,
    check: str,
    verdict: str,
    implied: float,
    stated: float,
    interval: tuple[float, float] | None,
) -> None:
    r = _row(seed_findings, check)
    assert r["verdict"] == verdict
    assert r["implied"] == pytest.approx(implied, rel=1e-9)
    assert r["stated"] == pytest.approx(stated, rel=1e-9)
    if interval is not None:
        assert (r["implied_lo"], r["implied_hi"]) == pytest.approx(interval, rel=1e-9)


def test_known_conflict_numbers_as_printed(seed_findings: pl.DataFrame) -> None:
    """The printed numbers of impact-model.md appear in the findings."""
    assert _row(seed_findings, "info_multiple_vs_cagr")["implied_text"] == "25.7%"
    assert "2.520" in str(_row(seed_findings, "info_multiple_vs_cagr")["explanation_en"])
    gdp = _row(seed_findings, "info_share_of_gdp")
    assert gdp["implied_text"] == "83.33万亿"
    assert "5.6%" in str(gdp["explanation_en"])
    assert pytest.approx(0.0555, abs=5e-5) == 5e12 / 90.03e12
    assert _row(seed_findings, "info_nontraffic_growth")["implied_text"] == "70.6%"
    assert _row(seed_findings, "jobseekers_vs_jobs")["implied_text"] == "2976万"
    assert _row(seed_findings, "miniprogram_value_vs_traditional")["stated_text"] == "4198亿"


# ------------------------------------------------------------------ regression anchors

REGRESSION_ANCHORS = [
    ("jobs_2019_direct_plus_indirect", 2601e4 + 362e4, 2963e4),  # 2963 = 2601 + 362
    ("info_share_2018", 2402e8 / 5.0e12, 0.048),  # 2402 ≈ 4.8% x 5.0万亿
    ("info_share_2017", 2097e8 / 4.5e12, 0.047),  # 2097 ≈ 4.7% x 4.5万亿
    ("info_cagr_2014_2018", (2402 / 952) ** 0.25 - 1, 0.26),  # = 26.0%
    ("jobs_growth_2018", 2235 / 2030 - 1, 0.101),  # = 10.1%
]


@pytest.mark.parametrize(("check", "implied", "stated"), REGRESSION_ANCHORS)
def test_regression_anchors_consistent(
    seed_findings: pl.DataFrame, check: str, implied: float, stated: float
) -> None:
    r = _row(seed_findings, check)
    assert r["verdict"] == "consistent"
    assert r["implied"] == pytest.approx(implied, rel=1e-9)
    assert r["stated"] == pytest.approx(stated, rel=1e-9)


def test_regression_anchor_values_by_hand() -> None:
    assert pytest.approx(0.2603, abs=5e-5) == (2402 / 952) ** 0.25 - 1
    assert pytest.approx(0.1010, abs=5e-5) == 2235 / 2030 - 1


def test_seed_summary(seed_findings: pl.DataFrame) -> None:
    """Every check runs; conflicts come first, then tensions, then consistent ones."""
    assert seed_findings.height == len(load_rules().checks) == 48
    verdicts = seed_findings["verdict"].to_list()
    assert verdicts.count("conflict") == 2
    assert verdicts.count("tension") == 7
    assert verdicts == sorted(
        verdicts, key=lambda v: {"conflict": 0, "tension": 1, "consistent": 2}[v]
    )
    assert set(seed_findings.columns) >= {
        "check",
        "kind",
        "figures",
        "quotes",
        "stated",
        "implied",
        "implied_lo",
        "implied_hi",
        "verdict",
        "explanation_en",
        "explanation_zh",
    }
    r = _row(seed_findings, "info_multiple_vs_cagr")
    assert r["figures"] == ["W108", "W010"]
    assert "是四年前年的2.5倍" in str(r["quotes"])
    assert "年均" in str(r["explanation_zh"])


def test_bundled_figures_equal_the_seed() -> None:
    assert read_figures(bundled_figures()).equals(read_figures(SEED))
    assert "CAICT" in bundled_figures().read_text(encoding="utf-8").splitlines()[0]
    assert bundled_rules().name == "audit_wechat_2018.toml"


# ------------------------------------------------------------------ the number parser

PARSE = [
    # text, unit column, value, lo, hi
    ("约11%", None, 0.11, 0.105, 0.115),
    ("2235万", None, 2235e4, 2234.5e4, 2235.5e4),
    ("4.8%", None, 0.048, 0.0475, 0.0485),
    ("26", "%", 0.26, 0.255, 0.265),
    ("10.82", "亿", 10.82e8, 10.815e8, 10.825e8),
    ("2402", "亿元", 2402e8, 2401.5e8, 2402.5e8),
    ("5", "万亿元", 5e12, 4.5e12, 5.5e12),
    ("90.03万亿", None, 90.03e12, 90.025e12, 90.035e12),
    ("超26%", None, 0.26, 0.26, 0.27),
    ("超5万亿", None, 5e12, 5e12, 5.5e12),  # step capped at 10%
    ("60%以上", "%", 0.6, 0.6, 0.66),
    ("2200多", "年", 2200, 2200, 2300),
    ("9亿多", "人", 9e8, 9e8, 10e8),
    ("80余", "件", 80, 80, 90),
    ("近146", "万", 146e4, 145e4, 146e4),
    ("1万左右", "人", 1e4, 0.5e4, 1.5e4),
    ("4", "个百分点", 0.04, 0.035, 0.045),
    ("八", "年", 8, 7.5, 8.5),
    ("十亿", "人", 1e9, 0.5e9, 1.5e9),
    ("千万", "人", 1e7, 0.5e7, 1.5e7),
    ("七成", "%", 0.7, 0.65, 0.75),
    ("半数", None, 0.5, 0.45, 0.55),
    ("半成", "成", 0.05, 0.045, 0.055),
    ("十多", "个", 10, 10, 20),
    ("三四十", "个", 35, 30, 40),
    ("两三", "分钟", 2.5, 2, 3),
    ("9到10", "倍", 9.5, 9, 10),
    ("20%-30%", "%", 0.25, 0.2, 0.3),
    ("800-1000", "元", 900, 800, 1000),
    ("两位数", "%", 0.1, 0.1, 1.0),
    ("一倍", "倍", 1, 0.5, 1.5),
    ("1,082.5", None, 1082.5, 1082.45, 1082.55),
]


@pytest.mark.parametrize(("text", "unit", "value", "lo", "hi"), PARSE)
def test_parse_printed(text: str, unit: str | None, value: float, lo: float, hi: float) -> None:
    p = parse_printed(text, unit)
    assert (p.value, p.lo, p.hi) == pytest.approx((value, lo, hi), rel=1e-12)


@pytest.mark.parametrize("text", ["2倍和3倍", "", "abc", "2018年10月至11月", "一两个…三四个"])
def test_parse_printed_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"not a number|empty"):
        parse_printed(text)


def test_numbers_are_exact() -> None:
    p = parse_printed(2402.0)
    assert (p.value, p.lo, p.hi) == (2402.0, 2402.0, 2402.0)


# ------------------------------------------------------------------ sums to 100%, outputs


@pytest.fixture(scope="module")
def share_findings() -> pl.DataFrame:
    return audit(read_figures(FIX / "shares.csv"), FIX / "shares.toml")


SHARES = [
    # 33 + 41 + 26 = 100%, each ±0.5 -> 98.5..101.5%
    ("dist_a", "consistent", 1.00, (0.985, 1.015)),
    # 3 x 33.3% = 99.9%, 99.75..100.05%: rounding explains it
    ("dist_b_rounded_thirds", "consistent", 0.999, (0.9975, 1.0005)),
    # 30 + 41 + 26 = 97%, at most 98.5%: no rounding reaches 100%
    ("dist_c_short", "conflict", 0.97, (0.955, 0.985)),
    # 11% x 10.82亿 = 1.19亿 > 2235万
    ("found_le_jobs", "conflict", 0.11 * 10.82e8, (0.105 * 10.815e8, 0.115 * 10.825e8)),
    ("users_le_anchor", "consistent", 10.82e8, (10.815e8, 10.825e8)),
]


@pytest.mark.parametrize(("check", "verdict", "implied", "interval"), SHARES)
def test_sums_and_parts(
    share_findings: pl.DataFrame,
    check: str,
    verdict: str,
    implied: float,
    interval: tuple[float, float],
) -> None:
    r = _row(share_findings, check)
    assert r["verdict"] == verdict
    assert r["implied"] == pytest.approx(implied, rel=1e-9)
    assert (r["implied_lo"], r["implied_hi"]) == pytest.approx(interval, rel=1e-9)


def test_model_outputs_go_through_the_same_rules() -> None:
    """A table of exact model outputs: the checks it covers run (and those on anchors only),
    the others are skipped."""
    outputs = figures_table({"W009": 2402e8, "W011": 2402e8 / 5.0e12, "W012": 2108e8})
    out = audit(outputs, missing="skip")
    on_figures = out.filter(
        pl.col("figures").list.eval(pl.element().str.starts_with("W")).list.any()
    )
    assert set(on_figures["check"]) == {"info_share_2018", "info_cagr_2014_2018"}
    assert "jobs_growth_2018" in out["check"].to_list()  # anchors only
    r = _row(out, "info_share_2018")
    assert r["verdict"] == "consistent"
    assert r["stated_lo"] == r["stated_hi"] == pytest.approx(0.04804)
    # a model output off the report's 4.8% by more than the anchor's rounding is a conflict
    off = audit(figures_table({"W009": 2402e8, "W011": 0.052}), missing="skip")
    assert _row(off, "info_share_2018")["verdict"] == "conflict"
    with pytest.raises(AuditError, match=r"unknown figure id 'W108'"):
        audit(outputs)


# ------------------------------------------------------------------ bad input


BAD_INPUT = [
    # figures, rules, the message names the file and row / column / key
    ("no_value_column.csv", "shares.toml", "no_value_column.csv: no column 'value'"),
    ("bad_value.csv", "shares.toml", "bad_value.csv row 3 (id A2), column value: '两倍和三倍'"),
    ("shares.csv", "unknown_id.toml", "(id 'typo'): unknown figure id 'A9'"),
    ("shares.csv", "bad_kind.toml", "checks[0] (id 'what').kind: 'sums_to' is not one of"),
    ("shares.csv", "missing_relation.toml", "(id 'cagr'): kind multiple_vs_cagr needs key"),
    ("shares.csv", "not_toml.toml", "not_toml.toml: not valid TOML"),
    ("shares.csv", "bad_expression.toml", "(id 'call').part: bad expression 'max(A1, A2)'"),
    ("shares.csv", "nowhere.toml", "nowhere.toml: no such rules file"),
    ("nowhere.csv", "shares.toml", "nowhere.csv: no such figures file"),
]


@pytest.mark.parametrize(("figures", "rules", "message"), BAD_INPUT)
def test_bad_input_names_the_place(figures: str, rules: str, message: str) -> None:
    with pytest.raises(AuditError, match=re.escape(message)):
        audit(read_figures(FIX / figures), FIX / rules, source=str(FIX / figures))


def test_unparseable_value_not_referenced_is_ignored() -> None:
    """The seed has values such as '2倍和3倍' (W300): fine unless a rule refers to them."""
    assert "2倍和3倍" in read_figures(SEED)["value"].to_list()


# ------------------------------------------------------------------ the command


def test_cli_default_run(tmp_path: Path) -> None:
    out = tmp_path / "findings.csv"
    res = CliRunner().invoke(cli, ["audit", "--out", str(out)])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0] == (
        "48 checks of audit_figures_wechat_2019.csv against audit_wechat_2018.toml: "
        "2 conflict, 7 tension, 39 consistent"
    )
    assert lines[1].startswith("conflict")
    assert "2976万" in res.output and "25.7%" in res.output and "83.33万亿" in res.output
    written = pl.read_csv(out)
    assert written.height == 48
    assert written["verdict"][0] == "conflict"


def test_cli_on_a_table_and_rules() -> None:
    res = CliRunner().invoke(
        cli, ["audit", str(FIX / "shares.csv"), "--rules", str(FIX / "shares.toml")]
    )
    assert res.exit_code == 0, res.output
    assert "5 checks of shares.csv against shares.toml: 2 conflict, 0 tension, 3 consistent" in (
        res.output
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bad_value.csv", "--rules", "shares.toml"], "row 3 (id A2), column value"),
        (["shares.csv", "--rules", "unknown_id.toml"], "unknown figure id 'A9'"),
        (["no_value_column.csv", "--rules", "shares.toml"], "no column 'value'"),
        (["missing.csv"], "no such figures file"),
    ],
)
def test_cli_bad_input_exits_2(args: list[str], message: str) -> None:
    argv = ["audit", str(FIX / args[0]), *args[1:-1]]
    if len(args) > 1:
        argv.append(str(FIX / args[-1]))
    res = CliRunner().invoke(cli, argv)
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert "Traceback" not in res.output
