"""screen(): Responses in, ValidSample out, by the rules of study.toml."""

from __future__ import annotations

import numpy as np
import polars as pl

from impactstudy.quality.measures import MEASURES, GroupData, Measure, QualityError
from impactstudy.quality.sample import AUDIT, DECISION, GroupSample, ValidSample, flag_column
from impactstudy.responses import GroupResponses, Responses
from impactstudy.study import Group, Study, schema

__all__ = ["screen"]

_META_TYPES: dict[str, pl.DataType] = {
    "_uuid": pl.String(),
    "_submitted": pl.Datetime("us"),
    "_mode": pl.String(),
    "_deviceid": pl.String(),
    "_ip_province": pl.String(),
    "_interviewer": pl.String(),
    "_duration_s": pl.Float64(),
}
_FIELD_TYPES: dict[str, pl.DataType] = {
    "integer": pl.Int64(),
    "decimal": pl.Float64(),
    "date": pl.Date(),
}


def _prepare(gr: GroupResponses, group: Group, study: Study) -> GroupData:
    """The working frame: `_row`, every meta and question column present (null if the
    Responses lack it), empty strings read as unanswered."""
    questions = [f for f in group.form.walk() if f.answerable and not f.generated]
    frame = gr.submissions.with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("_row"))
    missing: list[pl.Expr] = [
        pl.lit(None, dtype).alias(name)
        for name, dtype in _META_TYPES.items()
        if name not in frame.columns
    ]
    missing += [
        pl.lit(None, _FIELD_TYPES.get(f.type, pl.String())).alias(f.name)
        for f in questions
        if not f.repeats and f.name not in frame.columns
    ]
    frame = frame.with_columns(missing)
    blank = [
        pl.when(pl.col(c) != "").then(pl.col(c)).alias(c)
        for c, t in frame.schema.items()
        if t == pl.String
    ]
    frame = frame.with_columns(*blank, pl.col("_duration_s").cast(pl.Float64))
    return GroupData(
        gid=group.id,
        form=group.form,
        spec=group.spec,
        frame=frame,
        repeats=dict(gr.repeats),
        paradata=gr.paradata,
        today=study.config.fieldwork.end,
        province=study.config.sample.stratify_by,
        questions=questions,
    )


def _applies(rule: schema.QualityRule, gid: str) -> bool:
    return rule.groups is None or gid in rule.groups


def _measure(g: GroupData, rule: schema.QualityRule) -> list[Measure]:
    """The rule's measures over every submission of the group (null where it does not apply:
    other modes). Medians and duplicates are computed among the submissions it applies to."""
    n = g.frame.height
    sub = g if rule.modes is None else g.subset(pl.col("_mode").is_in(rule.modes))
    measures = MEASURES[rule.kind](sub, rule)
    if sub is g:
        return measures
    rows = sub.frame.get_column("_row")
    out = []
    for m in measures:
        full = pl.repeat(None, n, dtype=pl.Float64, eager=True).scatter(rows, m.values)
        out.append(Measure(m.name, full, m.threshold, m.op))
    return out


def _screen_group(
    gr: GroupResponses, group: Group, study: Study, *, audit: bool = True
) -> tuple[GroupSample, pl.DataFrame]:
    g = _prepare(gr, group, study)
    rules = study.config.quality.rule
    n = g.frame.height
    flags: list[pl.Series] = []
    # every measure of every rule, in order: (rule, measure, values, hits)
    measured: list[tuple[schema.QualityRule, Measure, pl.Series]] = []
    for rule in rules:
        fired = pl.repeat(False, n, dtype=pl.Boolean, eager=True)
        if _applies(rule, g.gid):
            for m in _measure(g, rule):
                if m.values.len() != n:  # pragma: no cover - a measure's own bug
                    raise QualityError(f"rule {rule.id!r}: {m.name} has the wrong length")
                hit = m.fires()
                fired = fired | hit
                measured.append((rule, m, hit))
        flags.append(fired.alias(flag_column(rule.id)))
    valid = pl.repeat(True, n, dtype=pl.Boolean, eager=True)
    for f, r in zip(flags, rules, strict=True):
        if r.action == "exclude":
            valid = valid & ~f
    submissions = gr.submissions.with_columns(*flags, valid.alias("_valid"))
    sample = GroupSample(group.id, submissions, dict(gr.repeats), gr.paradata)
    if not measured or not audit:
        return sample, _empty_audit()
    return sample, _audit(group.id, g.frame, measured)


def _audit(
    gid: str, frame: pl.DataFrame, measured: list[tuple[schema.QualityRule, Measure, pl.Series]]
) -> pl.DataFrame:
    """One row per submission x measure that measured something (value not null): by
    submission, then in the order of the rules and their measures. Laid out as a
    submissions x measures matrix read row by row, so no sort is needed."""
    n, k = frame.height, len(measured)
    values = np.empty((n, k), dtype=np.float64)
    known = np.empty((n, k), dtype=bool)
    hits = np.empty((n, k), dtype=bool)
    for i, (_, m, hit) in enumerate(measured):
        col = m.values.cast(pl.Float64)
        known[:, i] = col.is_not_null().to_numpy()
        values[:, i] = col.to_numpy()
        hits[:, i] = hit.to_numpy()
    at = np.flatnonzero(known.reshape(-1))
    row, j = at // k, at % k
    rows = frame.get_column("_row").to_numpy()[row]

    def per_measure(items: list[str], dtype: pl.DataType) -> pl.Series:
        return pl.Series(items, dtype=pl.String).cast(dtype).gather(j)

    levels = DECISION.categories.to_list()
    action = np.array([levels.index(r.action) for r, _, _ in measured])
    decision = np.where(hits.reshape(-1)[at], action[j], levels.index("pass"))
    out = pl.DataFrame(
        {
            "group": pl.repeat(gid, len(at), dtype=pl.String, eager=True).cast(AUDIT["group"]),
            "row": pl.Series(rows, dtype=pl.Int64),
            "_uuid": frame.get_column("_uuid").gather(row),
            "rule": per_measure([r.id for r, _, _ in measured], AUDIT["rule"]),
            "kind": per_measure([r.kind for r, _, _ in measured], AUDIT["kind"]),
            "measure": per_measure([m.name for _, m, _ in measured], AUDIT["measure"]),
            "value": pl.Series(values.reshape(-1)[at], dtype=pl.Float64),
            "threshold": pl.Series([m.threshold for _, m, _ in measured], dtype=pl.Float64).gather(
                j
            ),
            "decision": pl.Series(DECISION.categories).cast(DECISION).gather(decision),
        }
    )
    return out.select(pl.col(c).cast(t) for c, t in AUDIT.items())


def _empty_audit() -> pl.DataFrame:
    return pl.DataFrame(schema=AUDIT)


def screen(responses: Responses, study: Study, *, audit: bool = True) -> ValidSample:
    """Apply the study's quality rules to every submission: a Boolean `_q_<rule>` column per
    rule, `_valid` (no exclude-rule fired), and an audit row per submission x rule measure.
    `audit=False` leaves the audit empty, for callers that need only the flags (closing the
    simulated fieldwork's quotas screens again and again)."""
    unknown = sorted(set(responses.groups) - set(study.groups))
    if unknown:
        raise QualityError(
            f"responses to group{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
            f"that study {study.id!r} does not have"
        )
    groups: dict[str, GroupSample] = {}
    audits: list[pl.DataFrame] = []
    for gid, group in study.groups.items():
        if gid not in responses.groups:
            continue
        sample, table = _screen_group(responses.groups[gid], group, study, audit=audit)
        groups[gid] = sample
        audits.append(table)
    audited = pl.concat(audits) if audits else _empty_audit()
    return ValidSample(
        study_id=study.id,
        rules=tuple(study.config.quality.rule),
        groups=groups,
        audit=audited,
        province=study.config.sample.stratify_by,
        provenance={"stage": "quality", "responses": dict(responses.provenance)},
    )
