"""screen(): Responses in, ValidSample out, by the rules of study.toml."""

from __future__ import annotations

import polars as pl

from impactstudy.quality.measures import MEASURES, GroupData, Measure, QualityError
from impactstudy.quality.sample import AUDIT, GroupSample, ValidSample, flag_column
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
    gr: GroupResponses, group: Group, study: Study
) -> tuple[GroupSample, pl.DataFrame]:
    g = _prepare(gr, group, study)
    rules = study.config.quality.rule
    n = g.frame.height
    flags: list[pl.Series] = []
    audit: list[pl.DataFrame] = []
    for rule in rules:
        fired = pl.repeat(False, n, dtype=pl.Boolean, eager=True)
        if _applies(rule, g.gid):
            for m in _measure(g, rule):
                if m.values.len() != n:  # pragma: no cover - a measure's own bug
                    raise QualityError(f"rule {rule.id!r}: {m.name} has the wrong length")
                hit = m.fires()
                fired = fired | hit
                part = pl.DataFrame(
                    {"row": g.frame.get_column("_row"), "value": m.values, "_hit": hit}
                ).filter(pl.col("value").is_not_null())
                audit.append(
                    part.select(
                        "row",
                        pl.lit(len(audit), pl.Int64).alias("_m"),
                        pl.lit(rule.id).alias("rule"),
                        pl.lit(rule.kind).alias("kind"),
                        pl.lit(m.name).alias("measure"),
                        "value",
                        pl.lit(m.threshold, pl.Float64).alias("threshold"),
                        pl.when("_hit")
                        .then(pl.lit(rule.action))
                        .otherwise(pl.lit("pass"))
                        .alias("decision"),
                    )
                )
        flags.append(fired.alias(flag_column(rule.id)))
    valid = pl.repeat(True, n, dtype=pl.Boolean, eager=True)
    for f, r in zip(flags, rules, strict=True):
        if r.action == "exclude":
            valid = valid & ~f
    submissions = gr.submissions.with_columns(*flags, valid.alias("_valid"))
    sample = GroupSample(group.id, submissions, dict(gr.repeats), gr.paradata)
    if not audit:
        return sample, _empty_audit()
    # by submission, then in the order of the rules and their measures: one integer key
    frame = pl.concat(audit).sort(pl.col("row") * len(audit) + pl.col("_m"))
    uuids = g.frame.get_column("_uuid").gather(frame.get_column("row"))
    frame = frame.with_columns(pl.lit(group.id).alias("group"), uuids.alias("_uuid"))
    return sample, frame.select(pl.col(k).cast(t) for k, t in AUDIT.items())


def _empty_audit() -> pl.DataFrame:
    return pl.DataFrame(schema=AUDIT)


def screen(responses: Responses, study: Study) -> ValidSample:
    """Apply the study's quality rules to every submission: a Boolean `_q_<rule>` column per
    rule, `_valid` (no exclude-rule fired), and an audit row per submission x rule measure."""
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
        sample, audit = _screen_group(responses.groups[gid], group, study)
        groups[gid] = sample
        audits.append(audit)
    audit = pl.concat(audits) if audits else _empty_audit()
    return ValidSample(
        study_id=study.id,
        rules=tuple(study.config.quality.rule),
        groups=groups,
        audit=audit,
        province=study.config.sample.stratify_by,
        provenance={"stage": "quality", "responses": dict(responses.provenance)},
    )
