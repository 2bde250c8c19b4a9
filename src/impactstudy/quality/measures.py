"""What each kind of quality rule measures, over one group's submissions at once.

Every measure is one Float64 value per submission (null where the rule does not apply or
there is nothing to measure), a threshold and a comparison. A rule fires on a submission
when any of its measures does. All of it is Polars: window medians, horizontal sums over
item columns, a self-join within device for near-duplicates; no Python loop over rows (the
loops below run over rules, items and pages of the questionnaire).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import polars as pl

from impactstudy.forms import ExpressionError, Form, parse
from impactstudy.forms.model import Field
from impactstudy.forms.vector import ColumnKind, to_polars
from impactstudy.study import schema

__all__ = ["MEASURES", "GroupData", "Measure", "QualityError"]

Op = Literal["<", "<=", ">="]


class QualityError(Exception):
    """Responses that cannot be screened against the study (unknown group, bad expression)."""


@dataclass(frozen=True)
class Measure:
    """One measured quantity of a rule: `value op threshold` fires."""

    name: str
    values: pl.Series
    threshold: float
    op: Op

    def fires(self) -> pl.Series:
        v, t = self.values, self.threshold
        hit = v < t if self.op == "<" else v <= t if self.op == "<=" else v >= t
        return hit.fill_null(False)


@dataclass
class GroupData:
    """One group's submissions, prepared for measuring (`frame` has `_row`, 0-based)."""

    gid: str
    form: Form
    spec: schema.Group
    frame: pl.DataFrame
    repeats: dict[str, pl.DataFrame]
    paradata: pl.DataFrame | None
    today: dt.date
    province: str
    #: answerable questions in questionnaire order, repeat questions included
    questions: list[Field] = field(default_factory=list)

    @property
    def top(self) -> list[str]:
        """The questions stored in the submissions frame (not in repeats)."""
        return [f.name for f in self.questions if not f.repeats]

    def subset(self, keep: pl.Expr) -> GroupData:
        """The same group restricted to some submissions (their `_row` kept)."""
        return GroupData(
            self.gid,
            self.form,
            self.spec,
            self.frame.filter(keep),
            self.repeats,
            self.paradata,
            self.today,
            self.province,
            self.questions,
        )

    def column(self, expr: pl.Expr) -> pl.Series:
        return self.frame.select(expr.alias("value")).to_series()

    def position(self, name: str) -> int:
        return next(
            (i for i, f in enumerate(self.questions) if f.name == name), len(self.questions)
        )


MeasureFn = Callable[[GroupData, schema.QualityRule], list[Measure]]


def _answered(name: str, dtype: pl.DataType) -> pl.Expr:
    c = pl.col(name)
    return (c.is_not_null() & (c != "")).fill_null(False) if dtype == pl.String else c.is_not_null()


def _count(frame: pl.DataFrame, names: Sequence[str]) -> pl.Expr:
    names = [n for n in names if n in frame.columns]
    if not names:
        return pl.lit(0, pl.Int64)
    return pl.sum_horizontal(_answered(n, frame.schema[n]) for n in names).cast(pl.Int64)


def answer_counts(g: GroupData, sets: dict[str, list[Field]]) -> pl.DataFrame:
    """Answered items of each named set of questions, per submission: `_row`, `_uuid` and one
    Int64 column per set; answers in repeat instances count for their parent submission."""
    out = g.frame.select(
        "_row",
        "_uuid",
        *(
            _count(g.frame, [f.name for f in fs if not f.repeats]).alias(k)
            for k, fs in sets.items()
        ),
    )
    parts: list[pl.DataFrame] = []
    for name, child in g.repeats.items():
        if "_parent_uuid" not in child.columns:
            continue
        inside = {
            k: [f.name for f in fs if f.repeats and f.repeats[-1] == name] for k, fs in sets.items()
        }
        aggs = [_count(child, cols).sum().alias(k) for k, cols in inside.items() if cols]
        if aggs:
            parts.append(child.group_by("_parent_uuid").agg(aggs).rename({"_parent_uuid": "_uuid"}))
    if not parts:
        return out
    rep = pl.concat(parts, how="diagonal").group_by("_uuid").agg(pl.all().sum())
    keys = [k for k in sets if k in rep.columns]
    rep = rep.rename({k: f"{k}\x00" for k in keys})
    out = out.join(rep, on="_uuid", how="left", maintain_order="left")
    return out.select(
        "_row",
        "_uuid",
        *(
            (pl.col(k) + pl.col(f"{k}\x00").fill_null(0)).alias(k) if k in keys else pl.col(k)
            for k in sets
        ),
    )


# --- speeder ---------------------------------------------------------------------------------


def speeder(g: GroupData, rule: schema.QualityRule) -> list[Measure]:
    """Duration over the median duration of its group and mode; the median page's seconds per
    answered item."""
    out: list[Measure] = []
    if rule.threshold is not None:
        dur = pl.col("_duration_s")
        med = dur.median().over("_mode")
        ratio = pl.when(med > 0).then(dur / med)
        out.append(Measure("duration_ratio", g.column(ratio), rule.threshold, "<"))
    if rule.min_seconds_per_item is not None:
        out.append(Measure("seconds_per_item", _page_pace(g), rule.min_seconds_per_item, "<"))
    return out


def _page_pace(g: GroupData) -> pl.Series:
    """The median, over a submission's pages with answered items, of seconds per item."""
    para = g.paradata
    none = pl.repeat(None, g.frame.height, dtype=pl.Float64, eager=True)
    if para is None or para.height == 0:
        return none
    pages = sorted(str(p) for p in para.get_column("page").drop_nulls().unique().to_list())
    sets: dict[str, list[Field]] = {}
    code: dict[str, int] = {}
    for p in pages:
        on_page = [f for f in g.questions if f.name == p or p in f.ancestors]
        if on_page:
            code[p] = len(sets)
            sets[f"p{len(sets)}"] = on_page
    if not sets:
        return none
    counts = answer_counts(g, sets).with_columns(
        pl.int_range(pl.len(), dtype=pl.Int64).alias("_pos")
    )
    n = counts.height
    # (page, submission) as one key, page-major, so that the items answered on each page of
    # each submission are one gather from the page columns laid end to end
    items = pl.concat([counts.get_column(key) for key in sets])
    visits = (
        para.select(
            "_uuid",
            pl.col("page").replace_strict(code, default=None, return_dtype=pl.Int64).alias("_p"),
            pl.col("seconds").cast(pl.Float64),
        )
        .filter(pl.col("_p").is_not_null())
        .join(counts.select("_uuid", "_pos"), on="_uuid")
        .group_by((pl.col("_p") * n + pl.col("_pos")).alias("_k"))
        .agg(pl.col("seconds").sum())  # a page visited twice counts once, with both times
    )
    visits = visits.with_columns(items.gather(visits.get_column("_k")).alias("items"))
    pace = (
        visits.filter(pl.col("items") > 0)
        .group_by((pl.col("_k") % n).alias("_pos"))
        .agg((pl.col("seconds") / pl.col("items")).median().alias("value"))
    )
    joined = counts.select("_pos").join(pace, on="_pos", how="left", maintain_order="left")
    return joined.get_column("value")


# --- straightliner and bogus ----------------------------------------------------------------


def straightliner(g: GroupData, rule: schema.QualityRule) -> list[Measure]:
    """Per battery: the longest run of identical answers (in questionnaire order) as a share of
    the items answered, and the standard deviation of the answers' scale positions."""
    out: list[Measure] = []
    for bat in g.spec.quality.batteries:
        items = sorted(bat.items, key=g.position)
        pos = _positions(g.form, items)
        f = g.frame.select(items)
        run = pl.when(pl.col(items[0]).is_not_null()).then(1).otherwise(0)
        runs = [run.alias("r0")]
        f = f.with_columns(runs[0])
        for k in range(1, len(items)):
            c, prev = pl.col(items[k]), pl.col(items[k - 1])
            step = (
                pl.when(c.is_not_null() & (c == prev))
                .then(pl.col(f"r{k - 1}") + 1)
                .otherwise(pl.when(c.is_not_null()).then(1).otherwise(0))
            )
            f = f.with_columns(step.alias(f"r{k}"))
        n = pl.sum_horizontal(pl.col(i).is_not_null() for i in items)
        longest = pl.max_horizontal(pl.col(f"r{k}") for k in range(len(items)))
        share = pl.when(n >= 2).then(longest / n)
        values = f.select(share.cast(pl.Float64).alias("value")).to_series()
        out.append(Measure(f"longest_run:{bat.name}", values, _t(rule), ">="))
        if rule.max_sd is not None:
            x = pl.concat_list(pos).list.drop_nulls()
            sd = pl.when(x.list.len() >= 2).then(x.list.std(ddof=0))
            out.append(Measure(f"sd:{bat.name}", g.column(sd), rule.max_sd, "<="))
    return out


def _positions(form: Form, items: list[str]) -> list[pl.Expr]:
    """Each item's answer as its 1-based position on the battery's scale (Float64)."""
    codes = form.choices(items[0]).names
    mapping = {c: float(i + 1) for i, c in enumerate(codes)}
    return [pl.col(i).replace_strict(mapping, default=None, return_dtype=pl.Float64) for i in items]


def bogus(g: GroupData, rule: schema.QualityRule) -> list[Measure]:
    """The smaller of the shares of positively and of negatively keyed items agreed with
    (agree: the upper half of the scale), over every battery that has both."""
    pos: list[pl.Expr] = []
    neg: list[pl.Expr] = []
    for bat in g.spec.quality.batteries:
        reverse = set(bat.reverse_keyed)
        if not reverse or reverse == set(bat.items):
            continue
        codes = g.form.choices(bat.items[0]).names
        agree = [c for i, c in enumerate(codes) if i + 1 > (len(codes) + 1) / 2]
        for item in bat.items:
            (neg if item in reverse else pos).append(pl.col(item))
    if not pos:
        return []

    def share(cols: list[pl.Expr]) -> pl.Expr:
        answered = pl.sum_horizontal(c.is_not_null() for c in cols)
        agreed = pl.sum_horizontal(c.is_in(agree).fill_null(False) for c in cols)
        return pl.when(answered > 0).then(agreed / answered)

    value = pl.min_horizontal(share(pos), share(neg))
    both = share(pos).is_not_null() & share(neg).is_not_null()
    return [Measure("agree_share", g.column(pl.when(both).then(value)), _t(rule), ">=")]


# --- attention, expressions, province --------------------------------------------------------


def _kinds(frame: pl.DataFrame, refs: frozenset[str]) -> dict[str, ColumnKind]:
    kinds: dict[str, ColumnKind] = {}
    for name in refs:
        dtype = frame.schema.get(name)
        if dtype is None:
            continue
        kinds[name] = "number" if dtype.is_numeric() else "date" if dtype == pl.Date else "text"
    return kinds


def boolean(g: GroupData, source: str, where: str) -> pl.Series:
    """A boolean expression on every submission (false where it cannot be true)."""
    try:
        ex = parse(source)
        compiled = to_polars(ex, _kinds(g.frame, ex.refs), today=g.today, result="boolean")
    except ExpressionError as exc:
        raise QualityError(f"{where} in group {g.gid!r}: {exc}") from None
    # timestamps (start, end) as the ISO text the scalar evaluator reads
    stamps = [c for c in ex.refs if isinstance(g.frame.schema.get(c), pl.Datetime)]
    frame = g.frame.with_columns(pl.col(c).dt.to_string("%Y-%m-%dT%H:%M:%S") for c in stamps)
    return frame.select(compiled.alias("value")).to_series().fill_null(False)


def attention(g: GroupData, rule: schema.QualityRule) -> list[Measure]:
    """The number of attention checks failed (an unanswered check is failed)."""
    checks = g.spec.quality.attention_checks
    if not checks:
        return []
    failed = [  # one column per check, not per row
        (~boolean(g, c.pass_, f"attention check {c.field!r}")).alias(f"c{i}")
        for i, c in enumerate(checks)
    ]
    value = pl.DataFrame(failed).select(pl.sum_horizontal(pl.all()).cast(pl.Float64)).to_series()
    return [Measure("failed_checks", value, _t(rule), ">=")]


def expression(g: GroupData, rule: schema.QualityRule) -> list[Measure]:
    """1 where the rule's expression is true, 0 where it is not."""
    assert rule.expression is not None
    hit = boolean(g, rule.expression, f"quality rule {rule.id!r}")
    return [Measure("expression", hit.cast(pl.Float64), 1.0, ">=")]


def ip_province(g: GroupData, rule: schema.QualityRule) -> list[Measure]:
    """1 where the IP address's province differs from the stated one (null if either is
    unknown)."""
    if g.province not in g.frame.columns:
        return []
    ip, stated = pl.col("_ip_province"), pl.col(g.province)
    value = pl.when(ip.is_not_null() & stated.is_not_null()).then((ip != stated).cast(pl.Float64))
    return [Measure("ip_province_differs", g.column(value), 1.0, ">=")]


# --- timing and duplicates -------------------------------------------------------------------


def impossible_timing(g: GroupData, rule: schema.QualityRule) -> list[Measure]:
    """Duration in seconds per answered item (repeat answers included)."""
    total = answer_counts(g, {"n": g.questions}).get_column("n")
    f = g.frame.select("_duration_s").with_columns(total.alias("n"))
    value = pl.when(pl.col("n") > 0).then(pl.col("_duration_s") / pl.col("n"))
    return [Measure("seconds_per_answer", f.select(value).to_series(), _t(rule), "<")]


def duplicate(g: GroupData, rule: schema.QualityRule) -> list[Measure]:
    """Earlier submissions with the same `_uuid`; the largest share of identical answers with
    an earlier submission from the same `_deviceid`. Earlier: by `_submitted`, then row."""
    order = (
        g.frame.select("_row", "_submitted", "_uuid", "_deviceid")
        .sort("_submitted", "_row", nulls_last=True)
        .with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("_order"))
        .sort("_row")
    )
    uuid = pl.col("_uuid")
    copies = (  # only the rare repeated ids need a window
        order.filter(uuid.is_not_null() & uuid.is_duplicated()).select(
            "_row", pl.int_range(pl.len()).over("_uuid", order_by="_order").alias("n")
        )
    )
    same = (
        order.select("_row", uuid.is_not_null().alias("known"))
        .join(copies, on="_row", how="left", maintain_order="left")
        .select(pl.when("known").then(pl.col("n").fill_null(0)).cast(pl.Float64))
        .to_series()
    )
    out = [Measure("same_uuid", same, 1.0, ">=")]
    if rule.threshold is not None:
        out.append(Measure("identical_share", _near_duplicates(g, order), rule.threshold, ">="))
    return out


def _near_duplicates(g: GroupData, order: pl.DataFrame) -> pl.Series:
    cols = g.top
    shared = (
        order.get_column("_deviceid").is_not_null() & order.get_column("_deviceid").is_duplicated()
    )
    dev = (
        g.frame.filter(shared)
        .select("_row", *cols)
        .with_columns(*order.filter(shared).select("_deviceid", "_order").get_columns())
    )
    left = dev.select(
        "_deviceid",
        pl.col("_order").alias("_lo"),
        *(pl.col(c).alias(f"l{i}") for i, c in enumerate(cols)),
    )
    right = dev.select(
        "_deviceid",
        pl.col("_order").alias("_ro"),
        "_row",
        *(pl.col(c).alias(f"r{i}") for i, c in enumerate(cols)),
    )
    same = [(pl.col(f"l{i}") == pl.col(f"r{i}")).fill_null(False) for i in range(len(cols))]
    either = [
        pl.col(f"l{i}").is_not_null() | pl.col(f"r{i}").is_not_null() for i in range(len(cols))
    ]
    matches = pl.sum_horizontal(same) if cols else pl.lit(0)
    answered = pl.sum_horizontal(either) if cols else pl.lit(0)
    best = (
        left.lazy()
        .join(right.lazy(), on="_deviceid")
        .filter(pl.col("_lo") < pl.col("_ro"))
        .select("_row", pl.when(answered > 0).then(matches / answered).alias("share"))
        .group_by("_row")
        .agg(pl.col("share").max())
        .collect()
    )
    joined = g.frame.select("_row").join(best, on="_row", how="left", maintain_order="left")
    return joined.get_column("share").cast(pl.Float64)


def _t(rule: schema.QualityRule) -> float:
    assert rule.threshold is not None  # the schema requires one for these kinds
    return rule.threshold


MEASURES: dict[str, MeasureFn] = {
    "speeder": speeder,
    "straightliner": straightliner,
    "attention": attention,
    "duplicate": duplicate,
    "bogus": bogus,
    "impossible_timing": impossible_timing,
    "out_of_scope": expression,
    "impossible": expression,
    "ip_province": ip_province,
}
