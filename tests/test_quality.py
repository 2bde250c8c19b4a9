"""The quality stage on hand-built responses to the minimal study: each rule catches exactly the
respondents built to trip it, with hand-computed medians and shares in the audit."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from pydantic import ValidationError

from impactstudy.quality import QualityError, ValidSample, screen
from impactstudy.responses import GroupResponses, Responses
from impactstudy.study import Study, StudyError, load, schema

MINIMAL = Path(__file__).parent / "studies" / "minimal"
T0 = dt.datetime(2018, 10, 8, 9, 0)

META = {
    "_uuid": pl.String,
    "_submitted": pl.Datetime("us"),
    "_mode": pl.String,
    "_deviceid": pl.String,
    "_ip_province": pl.String,
    "_interviewer": pl.String,
    "_duration_s": pl.Float64,
}
RESIDENT = {
    "province": pl.String,
    "gender": pl.String,
    "age": pl.Int64,
    "pays": pl.String,
    "n_children": pl.Int64,
    "v_useful": pl.String,
    "v_tired": pl.String,
    "att_months": pl.Int64,
}
SHOP = {
    "province": pl.String,
    "shop_type": pl.String,
    "staff": pl.Int64,
    "accepts_wechat": pl.String,
}

# A careful resident: eight answers (pays = no skips the spending questions), agrees the
# platform is useful (3 of 3) and disagrees it is tiring (1), knows a year has 12 months.
CAREFUL = {
    "province": "beijing",
    "gender": "female",
    "age": 35,
    "pays": "no",
    "n_children": 0,
    "v_useful": "3",
    "v_tired": "1",
    "att_months": 12,
}
# Web durations: sorted 150 560 570 580 590 600 600 605 610 620 630 640 650 660 700, median
# 605. Phone durations 900, 1000, 12: median 900.
RESIDENTS: list[tuple[str, dict[str, Any]]] = [
    ("good0", {"dur": 600}),
    ("good1", {"dur": 640, "gender": "male", "age": 52}),
    ("good2", {"dur": 700, "province": "shanghai", "_ip_province": "shanghai"}),
    ("good3", {"dur": 560, "age": 28, "v_useful": "2", "_ip_province": None}),
    ("speeder", {"dur": 150}),  # 150 / 605 = 0.248
    ("straight", {"dur": 580, "v_useful": "2", "v_tired": "2"}),
    ("inattentive", {"dur": 620, "att_months": 11, "n_children": 1}),
    ("same_uuid", {"dur": 600, "uuid": "uuid:good0"}),  # good0 submitted again
    # good1's device: differs from good1 in age only (7 of 8 answers the same: 0.875)
    ("near_dup", {"dur": 660, "device": "dev:good1", "gender": "male", "age": 53}),
    # good1's device again: gender and children differ (6 of 8: 0.75; 5 of 8 with near_dup)
    ("same_device", {"dur": 610, "device": "dev:good1", "age": 52, "n_children": 1}),
    ("bogus", {"dur": 590, "v_useful": "3", "v_tired": "3"}),  # agrees with both keyings
    ("under_16", {"dur": 630, "age": 15}),
    ("young_parent", {"dur": 570, "age": 17, "n_children": 3}),
    ("elsewhere", {"dur": 650, "_ip_province": "guangdong"}),
    ("page_speeder", {"dur": 605}),  # a normal duration, but rushed pages (paradata)
    ("phone0", {"mode": "phone", "dur": 900}),  # 900 s / 8 answers
    ("phone1", {"mode": "phone", "dur": 1000, "n_children": 2}),  # 1000 / (8 + 2 child ages)
    ("fabricated", {"mode": "phone", "dur": 12}),  # 12 / 8 = 1.5 s per answer
]
CHILDREN = {"same_device": [9], "young_parent": [1, 2, 3], "phone1": [4, 7], "inattentive": [6]}
# page_speeder: basic 4 s / 3 items, v_useful 1, v_tired 1.5, att_months 3: median 1.4167.
# good0: basic 30 / 3, v_useful 6, v_tired 4, att_months 5: median 5.5. `spending` has no
# answered item (pays = no), so it does not count.
PARADATA = [
    ("page_speeder", "basic", 4.0),
    ("page_speeder", "v_useful", 1.0),
    ("page_speeder", "v_tired", 1.5),
    ("page_speeder", "att_months", 3.0),
    ("page_speeder", "spending", 0.5),
    ("good0", "basic", 30.0),
    ("good0", "v_useful", 6.0),
    ("good0", "v_tired", 4.0),
    ("good0", "att_months", 5.0),
]
# Shop web durations 300 320 100: median 300. One phone interview: 400 s / 4 answers.
SHOPS: list[tuple[str, dict[str, Any]]] = [
    ("shop0", {"dur": 300, "province": "guangdong", "_ip_province": "guangdong"}),
    ("shop1", {"dur": 320, "province": "guangdong", "_ip_province": "shanghai"}),
    ("shop_fast", {"dur": 100, "province": "shanghai", "_ip_province": "shanghai"}),
    ("shop_phone", {"mode": "phone", "dur": 400, "province": "guangdong", "_ip_province": None}),
]

# What each rule of tests/studies/minimal/study.toml must catch, and nothing else.
CAUGHT = {
    "duplicate": {"same_uuid", "near_dup"},
    "speeder": {"speeder", "page_speeder", "fabricated", "shop_fast"},
    "straightliner": {"straight", "bogus"},  # a two-item battery: agreeing twice is a run
    "attention": {"inattentive"},
    "bogus": {"bogus"},
    "phone_timing": {"fabricated"},
    "under_16": {"under_16"},
    "young_parent": {"young_parent"},
    "ip_province": {"elsewhere", "shop1"},
}
FLAG_ONLY = {"straightliner", "bogus", "young_parent", "ip_province"}
EXCLUDED = set().union(*(v for k, v in CAUGHT.items() if k not in FLAG_ONLY))


def frame(
    rows: list[tuple[str, dict[str, Any]]], base: dict[str, Any], fields: dict[str, Any]
) -> pl.DataFrame:
    records = []
    for i, (label, spec) in enumerate(rows):
        answers = {**base, **{k: v for k, v in spec.items() if k in fields}}
        records.append(
            {
                "_uuid": spec.get("uuid", f"uuid:{label}"),
                "_submitted": T0 + dt.timedelta(minutes=10 * i),
                "_mode": spec.get("mode", "web"),
                "_deviceid": spec.get("device", f"dev:{label}"),
                "_ip_province": spec.get("_ip_province", answers["province"]),
                "_interviewer": "int01" if spec.get("mode") == "phone" else None,
                "_duration_s": float(spec["dur"]),
                **answers,
            }
        )
    return pl.DataFrame(records, schema={**META, **fields}, orient="row")


def responses() -> Responses:
    children = pl.DataFrame(
        [
            {"_parent_uuid": f"uuid:{label}", "_index": i + 1, "child_age": age}
            for label, ages in CHILDREN.items()
            for i, age in enumerate(ages)
        ],
        schema={"_parent_uuid": pl.String, "_index": pl.Int64, "child_age": pl.Int64},
    )
    paradata = pl.DataFrame(
        [{"_uuid": f"uuid:{u}", "page": p, "seconds": s} for u, p, s in PARADATA],
        schema={"_uuid": pl.String, "page": pl.String, "seconds": pl.Float64},
    )
    shop_base = {"shop_type": "retail", "staff": 5, "accepts_wechat": "no"}
    return Responses(
        "minimal",
        {
            "resident": GroupResponses(
                "resident", frame(RESIDENTS, CAREFUL, RESIDENT), {"children": children}, paradata
            ),
            "shop": GroupResponses("shop", frame(SHOPS, shop_base, SHOP)),
        },
        {"source": "tests/test_quality.py"},
    )


def label(uuid: str) -> str:
    return uuid.removeprefix("uuid:")


@pytest.fixture(scope="module")
def study() -> Study:
    return load(MINIMAL)


@pytest.fixture(scope="module")
def sample(study: Study) -> ValidSample:
    return screen(responses(), study)


def with_rules(study: Study, *rules: dict[str, Any]) -> Study:
    quality = schema.Quality(rule=[schema.QualityRule.model_validate(r) for r in rules])
    return dataclasses.replace(study, config=study.config.model_copy(update={"quality": quality}))


# --- each rule catches exactly its respondents ------------------------------------------------


@pytest.mark.parametrize("rule", sorted(CAUGHT))
def test_each_rule_catches_exactly_its_respondents(sample: ValidSample, rule: str) -> None:
    rows = {
        gs.group: gs.submissions.with_row_index().filter(pl.col(f"_q_{rule}"))["index"].to_list()
        for gs in sample
    }
    names = {g: [n for n, _ in (RESIDENTS if g == "resident" else SHOPS)] for g in rows}
    got = {names[g][i] for g, idx in rows.items() for i in idx}
    assert got == CAUGHT[rule]


def test_valid_is_no_exclude_rule_fired(sample: ValidSample) -> None:
    for gs, rows in ((sample.groups["resident"], RESIDENTS), (sample.groups["shop"], SHOPS)):
        valid = dict(zip([n for n, _ in rows], gs.submissions["_valid"], strict=True))
        assert {n for n, v in valid.items() if not v} == EXCLUDED & set(valid)
        assert gs.valid.height == len(rows) - len(EXCLUDED & set(valid))
    assert len(sample) == 11 + 3


@pytest.mark.parametrize("rule", sorted(FLAG_ONLY))
def test_flag_only_rules_do_not_exclude(sample: ValidSample, rule: str) -> None:
    assert next(r for r in sample.rules if r.id == rule).action == "flag"
    only = CAUGHT[rule] - EXCLUDED
    assert only  # someone is caught by this rule alone...
    valid = {
        n
        for gs, rows in ((sample.groups["resident"], RESIDENTS), (sample.groups["shop"], SHOPS))
        for (n, _), v in zip(rows, gs.submissions["_valid"], strict=True)
        if v
    }
    assert only <= valid  # ...and stays in the valid sample
    assert sample.audit.filter(pl.col("rule") == rule, pl.col("decision") == "exclude").is_empty()


def test_valid_repeats_are_those_of_valid_submissions(sample: ValidSample) -> None:
    children = sample.groups["resident"].valid_repeats()["children"]
    assert sorted(children["child_age"]) == [1, 2, 3, 4, 7, 9]  # not inattentive's 6
    assert sample.groups["resident"].repeats["children"].height == 7


# --- the audit ---------------------------------------------------------------------------------

AUDIT_ROWS = [
    # who, rule, measure, value, threshold, decision
    ("resident", 4, "speeder", "duration_ratio", 150 / 605, 0.5, "exclude"),
    ("resident", 0, "speeder", "duration_ratio", 600 / 605, 0.5, "pass"),
    ("resident", 17, "speeder", "duration_ratio", 12 / 900, 0.5, "exclude"),
    ("resident", 16, "speeder", "duration_ratio", 1000 / 900, 0.5, "pass"),
    ("shop", 2, "speeder", "duration_ratio", 100 / 300, 0.5, "exclude"),
    ("shop", 3, "speeder", "duration_ratio", 1.0, 0.5, "pass"),
    ("resident", 14, "speeder", "seconds_per_item", (4 / 3 + 1.5) / 2, 2.0, "exclude"),
    ("resident", 0, "speeder", "seconds_per_item", 5.5, 2.0, "pass"),
    ("resident", 5, "straightliner", "longest_run:views", 1.0, 1.0, "flag"),
    ("resident", 5, "straightliner", "sd:views", 0.0, 0.0, "flag"),
    ("resident", 3, "straightliner", "sd:views", 0.5, 0.0, "pass"),
    ("resident", 6, "attention", "failed_checks", 1.0, 1.0, "exclude"),
    ("resident", 0, "attention", "failed_checks", 0.0, 1.0, "pass"),
    ("resident", 7, "duplicate", "same_uuid", 1.0, 1.0, "exclude"),
    ("resident", 0, "duplicate", "same_uuid", 0.0, 1.0, "pass"),
    ("resident", 8, "duplicate", "identical_share", 7 / 8, 0.85, "exclude"),
    ("resident", 9, "duplicate", "identical_share", 6 / 8, 0.85, "pass"),
    ("resident", 10, "bogus", "agree_share", 1.0, 1.0, "flag"),
    ("resident", 5, "bogus", "agree_share", 0.0, 1.0, "pass"),
    ("resident", 17, "phone_timing", "seconds_per_answer", 12 / 8, 2.0, "exclude"),
    ("resident", 15, "phone_timing", "seconds_per_answer", 900 / 8, 2.0, "pass"),
    ("resident", 16, "phone_timing", "seconds_per_answer", 1000 / 10, 2.0, "pass"),
    ("resident", 11, "under_16", "expression", 1.0, 1.0, "exclude"),
    ("resident", 12, "young_parent", "expression", 1.0, 1.0, "flag"),
    ("resident", 13, "ip_province", "ip_province_differs", 1.0, 1.0, "flag"),
    ("shop", 1, "ip_province", "ip_province_differs", 1.0, 1.0, "flag"),
]


@pytest.mark.parametrize(
    ("group", "row", "rule", "measure", "value", "threshold", "decision"), AUDIT_ROWS
)
def test_audit_row(
    sample: ValidSample,
    group: str,
    row: int,
    rule: str,
    measure: str,
    value: float,
    threshold: float,
    decision: str,
) -> None:
    got = sample.audit.filter(
        pl.col("group") == group, pl.col("row") == row, pl.col("measure") == measure
    ).filter(pl.col("rule") == rule)
    assert got.height == 1
    r = got.row(0, named=True)
    uuid = sample.groups[group].submissions["_uuid"][row]
    assert r["_uuid"] == uuid
    assert r["value"] == pytest.approx(value, rel=1e-12)
    assert r["threshold"] == threshold
    assert r["decision"] == decision


@pytest.mark.parametrize(
    ("rule", "not_measured"),
    [
        # web interviews are not timed by a phone-only rule
        ("phone_timing", [("resident", i) for i in range(15)] + [("shop", i) for i in range(3)]),
        # no earlier submission on the same device: nothing to compare
        ("duplicate:identical_share", [("resident", 0), ("resident", 1), ("shop", 0)]),
        # no paradata
        ("speeder:seconds_per_item", [("resident", 1), ("shop", 0)]),
        # unknown IP province
        ("ip_province", [("resident", 3), ("shop", 3)]),
        # the shop questionnaire has no batteries, checks or age
        ("straightliner", [("shop", i) for i in range(4)]),
        ("bogus", [("shop", i) for i in range(4)]),
        ("attention", [("shop", i) for i in range(4)]),
        ("under_16", [("shop", i) for i in range(4)]),
    ],
)
def test_no_audit_row_where_nothing_is_measured(
    sample: ValidSample, rule: str, not_measured: list[tuple[str, int]]
) -> None:
    rule_id, _, measure = rule.partition(":")
    rows = sample.audit.filter(pl.col("rule") == rule_id)
    if measure:
        rows = rows.filter(pl.col("measure") == measure)
    present = set(zip(rows["group"], rows["row"], strict=True))
    assert not present & set(not_measured)
    assert present  # the rule did measure the others


def test_audit_order_and_types(sample: ValidSample) -> None:
    a = sample.audit
    assert a.columns == [
        "group",
        "row",
        "_uuid",
        "rule",
        "kind",
        "measure",
        "value",
        "threshold",
        "decision",
    ]
    assert a["decision"].dtype == pl.Enum(["exclude", "flag", "pass"])
    assert a["value"].null_count() == 0
    keys = a.select(pl.col("group") == "shop", "row").rows()
    assert keys == sorted(keys)


def test_exclusions_say_why(sample: ValidSample) -> None:
    why = {(g, r): set(rules) for g, r, _, rules in sample.exclusions().iter_rows()}
    assert why[("resident", 17)] == {"speeder", "phone_timing"}
    assert why[("resident", 7)] == {"duplicate"}
    assert len(why) == len(EXCLUDED)


# --- summary and table -------------------------------------------------------------------------


def test_summary_by_rule_group_province(sample: ValidSample) -> None:
    s = sample.summary()
    assert s.columns == [
        "group",
        "province",
        "rule",
        "kind",
        "action",
        "responses",
        "fired",
        "excluded",
        "excluded_alone",
    ]
    # every rule x group x province present in the data, none twice
    assert s.height == len(sample.rules) * 4
    assert s.select("group", "province", "rule").is_unique().all()

    def row(group: str, province: str, rule: str) -> tuple[int, int, int, int]:
        r = s.filter(group=group, province=province, rule=rule).row(0, named=True)
        return r["responses"], r["fired"], r["excluded"], r["excluded_alone"]

    # resident: 17 in Beijing, 1 (good2) in Shanghai
    assert row("resident", "beijing", "speeder") == (17, 3, 3, 2)  # fabricated is also phone_timing
    assert row("resident", "beijing", "duplicate") == (17, 2, 2, 2)
    assert row("resident", "beijing", "straightliner") == (17, 2, 0, 0)
    assert row("resident", "beijing", "phone_timing") == (17, 1, 1, 0)
    assert row("resident", "shanghai", "speeder") == (1, 0, 0, 0)
    assert row("shop", "shanghai", "speeder") == (1, 1, 1, 1)
    assert row("shop", "guangdong", "ip_province") == (3, 1, 0, 0)
    assert row("shop", "guangdong", "under_16") == (3, 0, 0, 0)
    for rule, who in CAUGHT.items():
        assert s.filter(rule=rule)["fired"].sum() == len(who)


def test_table_by_group_and_province(sample: ValidSample) -> None:
    assert sample.table().rows() == [
        ("resident", "beijing", 17, 7, 10),
        ("resident", "shanghai", 1, 0, 1),
        ("shop", "guangdong", 3, 0, 3),
        ("shop", "shanghai", 1, 1, 0),
    ]


# --- single rules, edge cases -------------------------------------------------------------------


def web(durations: list[float], **answers: list[Any]) -> Responses:
    rows = [
        (f"r{i}", {"dur": d, **{k: v[i] for k, v in answers.items()}})
        for i, d in enumerate(durations)
    ]
    return Responses(
        "minimal", {"resident": GroupResponses("resident", frame(rows, CAREFUL, RESIDENT))}
    )


def fired(sample: ValidSample, rule: str) -> list[int]:
    sub = sample.groups["resident"].submissions.with_row_index()
    return sub.filter(pl.col(f"_q_{rule}"))["index"].to_list()


@pytest.mark.parametrize(
    ("rule", "data", "expected"),
    [
        # median 200: 100 is exactly half, not under it
        ({"kind": "speeder", "threshold": 0.5}, web([100, 200, 400]), []),
        ({"kind": "speeder", "threshold": 0.5}, web([99, 200, 400]), [0]),
        # even count: the median is the mean of the middle two, (200 + 300) / 2
        ({"kind": "speeder", "threshold": 0.5}, web([124, 200, 300, 900]), [0]),
        ({"kind": "speeder", "threshold": 0.5}, web([125, 200, 300, 900]), []),
        # 7 of 8 answers alike is 0.875: at the threshold fires, above it does not
        (
            {"kind": "duplicate", "threshold": 0.875},
            web([600, 600], age=[30, 31], device=["d", "d"]),
            [1],
        ),
        (
            {"kind": "duplicate", "threshold": 0.88},
            web([600, 600], age=[30, 31], device=["d", "d"]),
            [],
        ),
        # other devices are never near-duplicates
        ({"kind": "duplicate", "threshold": 0.5}, web([600, 600], device=["d", "e"]), []),
        # the attention check: 12 passes, anything else or nothing fails
        ({"kind": "attention", "threshold": 1}, web([600] * 3, att_months=[12, 13, None]), [1, 2]),
        # agreement on the 3-point scale is 3 only
        (
            {"kind": "bogus", "threshold": 1.0},
            web([600] * 3, v_useful=["3", "3", "2"], v_tired=["3", "2", "2"]),
            [0],
        ),
        # an unanswered item breaks a run and leaves too few answers to measure
        (
            {"kind": "straightliner", "threshold": 1.0},
            web([600] * 2, v_useful=["2", None], v_tired=["2", "2"]),
            [0],
        ),
    ],
)
def test_single_rule(
    study: Study, rule: dict[str, Any], data: Responses, expected: list[int]
) -> None:
    assert fired(screen(data, with_rules(study, {"id": "r", **rule})), "r") == expected


def test_the_first_submitted_is_kept_not_the_first_row(study: Study) -> None:
    data = web([600, 600], age=[30, 30], device=["d", "d"])
    sub = data.groups["resident"].submissions
    data.groups["resident"].submissions = sub.with_columns(
        pl.Series("_submitted", [T0 + dt.timedelta(hours=1), T0])
    )
    out = screen(data, with_rules(study, {"id": "dup", "kind": "duplicate", "threshold": 0.85}))
    assert fired(out, "dup") == [0]


def test_modes_restrict_the_rule_and_its_median(study: Study) -> None:
    # web median 600; the phone interview at 100 s would be a speeder against it
    data = web([600, 600, 100], mode=["web", "web", "phone"])
    out = screen(
        data, with_rules(study, {"id": "s", "kind": "speeder", "threshold": 0.5, "modes": ["web"]})
    )
    assert fired(out, "s") == []
    assert out.audit["row"].to_list() == [0, 1]


def test_expressions_need_a_column_per_field(study: Study) -> None:
    rule = {"id": "x", "kind": "impossible", "expression": "${age} < 18 and ${n_children} > 2"}
    data = web([600, 600], age=[16, 40], n_children=[3, 3])
    assert fired(screen(data, with_rules(study, {**rule, "groups": ["resident"]})), "x") == [0]


@pytest.mark.parametrize(("k", "expected"), [(1, [1, 2]), (2, [2])])
def test_attention_k_of_n(study: Study, k: int, expected: list[int]) -> None:
    resident = study.groups["resident"]
    checks = [
        {"field": "att_months", "pass": "${att_months} = 12"},
        {"field": "n_children", "pass": "${n_children} < 10"},
    ]
    spec = resident.spec.model_copy(
        update={"quality": schema.GroupQuality.model_validate({"attention_checks": checks})}
    )
    groups = {**study.groups, "resident": dataclasses.replace(resident, spec=spec)}
    two = dataclasses.replace(
        with_rules(study, {"id": "a", "kind": "attention", "threshold": k}), groups=groups
    )
    data = web([600] * 3, att_months=[12, 11, 11], n_children=[0, 0, 10])
    out = screen(data, two)
    assert fired(out, "a") == expected
    assert out.audit["value"].to_list() == [0.0, 1.0, 2.0]


def test_every_bundled_rule_runs_on_every_bundled_group() -> None:
    from impactstudy.study import bundled_study

    study = load(bundled_study())
    groups = {}
    for gid in study.groups:
        sub = pl.DataFrame(
            {
                "_uuid": ["uuid:a", "uuid:b"],
                "_mode": ["web", "phone"],
                "_duration_s": [600.0, 900.0],
                "province": ["beijing", "hebei"],
                "att_instructed": ["4", "2"],
                "att_months": [12, 12],
            }
        )
        groups[gid] = GroupResponses(gid, sub)
    out = screen(Responses(study.id, groups), study)
    for gs in out:
        flags = [c for c in gs.submissions.columns if c.startswith("_q_")]
        assert flags == [f"_q_{r.id}" for r in study.config.quality.rule]
        assert gs.submissions["_q_attention"].to_list() == [False, True]
        assert gs.submissions["_valid"].to_list() == [True, True]


def test_unknown_group_is_refused(study: Study) -> None:
    data = Responses("minimal", {"nobody": GroupResponses("nobody", pl.DataFrame())})
    with pytest.raises(QualityError, match="nobody"):
        screen(data, study)


# --- disk, determinism ------------------------------------------------------------------------


def test_write_and_read_back(sample: ValidSample, tmp_path: Path) -> None:
    back = ValidSample.read(sample.write(tmp_path / "vs"))
    assert back.rules == sample.rules
    assert back.audit.equals(sample.audit)
    assert back.summary().equals(sample.summary())
    for gid, gs in sample.groups.items():
        assert back.groups[gid].submissions.equals(gs.submissions)
        assert back.groups[gid].repeats.keys() == gs.repeats.keys()
    assert len(back) == len(sample)


def test_same_input_same_bytes(study: Study, tmp_path: Path) -> None:
    a = screen(responses(), study).write(tmp_path / "a")
    b = screen(responses(), study).write(tmp_path / "b")
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f


# --- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "action"),
    [
        ("speeder", "flag"),
        ("straightliner", "flag"),
        ("attention", "flag"),
        ("bogus", "flag"),
        ("impossible", "flag"),
        ("ip_province", "flag"),
        ("duplicate", "exclude"),
        ("impossible_timing", "exclude"),
        ("out_of_scope", "exclude"),
    ],
)
def test_default_action_by_kind(kind: str, action: str) -> None:
    extra: dict[str, Any] = {"threshold": 1.0}
    if kind in ("impossible", "out_of_scope"):
        extra = {"expression": "${age} < 16"}
    elif kind == "ip_province":
        extra = {}
    assert schema.QualityRule.model_validate({"id": "r", "kind": kind, **extra}).action == action


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"kind": "speeder"}, "needs a threshold"),
        ({"kind": "speeder", "threshold": 1.5}, "0 < t <= 1"),
        ({"kind": "attention", "threshold": 1.5}, "a whole number"),
        ({"kind": "attention", "threshold": 0}, "a whole number"),
        ({"kind": "duplicate", "threshold": 0}, "0 < t <= 1"),
        ({"kind": "impossible_timing", "threshold": -1}, "> 0"),
        ({"kind": "out_of_scope"}, "needs an expression"),
        ({"kind": "impossible", "expression": "${age} < 1", "threshold": 1}, "takes no threshold"),
        (
            {"kind": "speeder", "threshold": 0.5, "expression": "${age} < 1"},
            "only for out_of_scope",
        ),
        ({"kind": "straightliner", "threshold": 1, "min_seconds_per_item": 2}, "only for speeder"),
        ({"kind": "bogus", "threshold": 0.9, "max_sd": 0}, "only for straightliner"),
        ({"kind": "ip_province", "action": "exclude"}, "can only flag"),
        ({"kind": "speeder", "threshold": 0.5, "action": "drop"}, "'exclude' or 'flag'"),
    ],
)
def test_bad_rules_are_refused(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        schema.QualityRule.model_validate({"id": "r", **rule})


def test_page_time_alone_needs_no_threshold() -> None:
    r = schema.QualityRule.model_validate({"id": "r", "kind": "speeder", "min_seconds_per_item": 2})
    assert r.threshold is None


@pytest.mark.parametrize(
    ("toml", "key", "message"),
    [
        (
            'kind = "speeder"\nthreshold = 0.5\ngroups = ["nobody"]',
            "groups",
            "no such group: nobody",
        ),
        (
            'kind = "out_of_scope"\nexpression = "${age} < 16"',
            "expression",
            "not a field of questionnaire 'shop'",
        ),
        (
            'kind = "impossible"\nexpression = "${age} <"\ngroups = ["resident"]',
            "expression",
            "malformed",
        ),
        ('kind = "attention"\nthreshold = 2', "threshold", "more than the 1 attention check"),
    ],
)
def test_loader_checks_rules_against_the_groups(
    tmp_path: Path, toml: str, key: str, message: str
) -> None:
    root = shutil.copytree(MINIMAL, tmp_path / "study")
    with (root / "study.toml").open("a", encoding="utf-8") as f:
        f.write(f'\n[[quality.rule]]\nid = "extra"\n{toml}\n')
    with pytest.raises(StudyError) as err:
        load(root)
    problems = [p for p in err.value.problems if p.key == f"quality.rule (extra).{key}"]
    assert problems, err.value
    assert message in problems[0].message


def test_bundled_rules_have_sources() -> None:
    from impactstudy.study import bundled_study

    study = load(bundled_study())
    for rule in study.config.quality.rule:
        assert rule.source, rule.id
        assert rule.description and set(rule.description) == {"zh", "en"}, rule.id
    kinds = {r.kind for r in study.config.quality.rule}
    assert kinds >= {
        "speeder",
        "straightliner",
        "attention",
        "duplicate",
        "bogus",
        "impossible_timing",
    }
