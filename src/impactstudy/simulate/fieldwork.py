"""Simulated fieldwork: who is invited, who answers, how, how fast, and who answers badly.

Per group and province stratum, units are invited in random order; each answers with a
probability that depends on its mode and its attributes (simulation.toml `response`), so the
respondents are not a random sample and unweighted estimates are biased. Invitations stop when
the stratum's quota of good respondents is met. Among respondents, bad kinds are injected at
the configured rates: speeders, straight-liners, attention-check failers, bogus (agreeing
with everything), phone interviews of impossible speed, and duplicates (a good submission
sent twice from the same device). Good respondents keep their true answers, so the truth
is what a perfect survey would measure.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl

from impactstudy.forms import Form, parse
from impactstudy.forms.vector import to_polars
from impactstudy.responses import GroupResponses, Responses, choice_column, table_schema
from impactstudy.simulate.population import (
    Population,
    SimulationError,
    _stable_hash,
    column_kinds,
)
from impactstudy.study import Study
from impactstudy.study.simspec import GroupSimulation

__all__ = ["BAD_KINDS", "Fieldwork", "run_fieldwork"]

BAD_KINDS = ("speeder", "straightliner", "attention", "bogus", "phone_timing")
TZ = dt.timezone(dt.timedelta(hours=8))


class QuotaShortError(SimulationError):
    """A stratum has fewer valid responses than its quota: invite more."""


@dataclass
class Fieldwork:
    responses: Responses
    #: per group: `_uuid`, `_unit`, `_stratum`, `_mode`, `_bad` (kind or null), `_quota`
    sample: dict[str, pl.DataFrame]


def _quotas(study: Study, group: str, codes: list[str]) -> np.ndarray:
    spec = study.config.groups[group].sample
    margin = study.frames.margins.get(group, {}).get(study.config.sample.stratify_by)
    if margin is not None:
        p = np.array([margin.shares.get(c, 0.0) for c in codes])
    else:
        p = np.array([float(pr.population) for pr in study.frames.geography])
    if spec.allocation == "equal":
        p = np.ones(len(codes))
    elif spec.allocation == "sqrt":
        p = np.sqrt(p)
    p = p / p.sum()
    n, floor = spec.target_valid, spec.min_per_stratum
    base = np.minimum(np.full(len(codes), floor), n // len(codes))
    rest = n - base.sum()
    raw = p * rest
    counts = np.floor(raw).astype(int)
    counts[np.argsort(-(raw - counts), kind="stable")[: rest - counts.sum()]] += 1
    return np.asarray(base + counts, dtype=int)


def _logit(p: np.ndarray) -> np.ndarray:
    return np.asarray(np.log(p / (1 - p)))


class _Group:
    def __init__(self, study: Study, pop: Population, seed: int) -> None:
        self.study = study
        self.pop = pop
        self.group = pop.group
        self.form: Form = study.groups[pop.group].form
        self.cfg = study.config.groups[pop.group]
        sim = study.simulation
        self.sim: GroupSimulation | None = sim.groups.get(pop.group) if sim else None
        self.settings = sim.simulation if sim else None
        self.rng = np.random.default_rng([seed, _stable_hash(pop.group), 7])
        self.strat = study.config.sample.stratify_by
        self.buffer = 0.03

    def propensity(self, modes: np.ndarray) -> np.ndarray:
        frame = self.pop.frame
        rates = self.sim.response.rate if self.sim else {"web": 0.1, "phone": 0.25}
        logit = np.where(
            modes == "phone",
            _logit(np.array(rates.get("phone", 0.25))),
            _logit(np.array(rates.get("web", 0.1))),
        )
        if self.sim is not None:
            kinds = column_kinds(self.form, frame)
            for src, shift in self.sim.response.effects.items():
                ex = to_polars(parse(src), kinds, result="boolean").fill_null(False)
                hit = frame.select(ex).to_series().to_numpy().astype(bool)
                logit = logit + shift * hit
        return np.asarray(1 / (1 + np.exp(-logit)))

    def select(self) -> pl.DataFrame:
        """Invited units in order, until each stratum has its quota of good respondents."""
        frame = self.pop.frame
        codes = [p.code for p in self.study.frames.geography]
        quotas = _quotas(self.study, self.group, codes)
        modes_cfg = self.cfg.sample.modes
        mode_names = np.array(list(modes_cfg))
        mode_p = np.array(list(modes_cfg.values()))
        modes = mode_names[self.rng.choice(len(mode_names), size=frame.height, p=mode_p)]
        p = self.propensity(modes)
        responds = self.rng.random(frame.height) < p
        rates = self.settings.bad if self.settings else None
        kinds = ["good", *BAD_KINDS]
        shares = np.array(
            [0.0] + [getattr(rates, k) if rates else 0.0 for k in BAD_KINDS], dtype=float
        )
        shares[0] = 1 - shares[1:].sum()
        kind = self.rng.choice(len(kinds), size=frame.height, p=shares)  # index in kinds
        # impossible timing is a phone fault; speeders on the phone are interviewer-rushed too
        timing, speeder = kinds.index("phone_timing"), kinds.index("speeder")
        kind = np.where((kind == timing) & (modes != "phone"), speeder, kind)
        strata_col = frame.get_column(self.strat)
        strata = strata_col.to_numpy()
        # each unit's stratum as its index in codes (-1: none), its units found by one sort
        where = strata_col.replace_strict(
            {c: i for i, c in enumerate(codes)}, default=-1, return_dtype=pl.Int64
        ).to_numpy()
        by_stratum = np.argsort(where, kind="stable")
        bounds = np.searchsorted(where[by_stratum], np.arange(len(codes) + 1))
        picked: list[np.ndarray] = []
        orders: list[np.ndarray] = []
        for i, (code, quota) in enumerate(zip(codes, quotas, strict=True)):
            units = by_stratum[bounds[i] : bounds[i + 1]]
            order = self.rng.permutation(units)
            resp = order[responds[order]]
            good = np.cumsum(kind[resp] == 0)
            if quota == 0:
                continue
            if len(good) == 0 or good[-1] < quota:
                raise SimulationError(
                    f"{self.group}: province {code} has {int(good[-1]) if len(good) else 0} "
                    f"good respondents for a quota of {quota}; enlarge the population "
                    "(simulation.toml size) or the response rates"
                )
            # invite a few beyond the quota: some good respondents will fail screening, and
            # the quota closes on valid responses (see close_quotas)
            wanted = quota + max(2, int(np.ceil(self.buffer * quota)))
            stop = int(np.searchsorted(good, min(wanted, int(good[-1])))) + 1
            picked.append(resp[:stop])
            orders.append(np.arange(stop))
        chosen = np.concatenate(picked)
        bad = pl.Series([None, *BAD_KINDS], dtype=pl.String).gather(kind[chosen])
        return pl.DataFrame(
            {
                "_unit": frame["_unit"].to_numpy()[chosen],
                "_stratum": strata[chosen],
                "_mode": modes[chosen],
                "_bad": bad,
                "_row": chosen,
                "_order": np.concatenate(orders).astype(np.int64),
                "_quota": np.repeat(quotas[quotas > 0], [len(p) for p in picked]),
            }
        )

    # -- answers -------------------------------------------------------------------------

    def _uuids(self, n: int) -> pl.Series:
        """`uuid:xxxxxxxx-xxxx-4xxx-axxx-xxxxxxxxxxxx` (version 4 style) from 128 random bits,
        laid out as bytes by numpy rather than formatted row by row."""
        raw = self.rng.integers(0, 2**32, size=(n, 4), dtype=np.uint64)
        octets = raw.astype(">u4").view(np.uint8).reshape(n, 16)  # big-endian: digits in order
        nibbles = np.empty((n, 32), dtype=np.uint8)
        nibbles[:, 0::2] = octets >> 4
        nibbles[:, 1::2] = octets & 15
        hexes = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)[nibbles]
        text = np.empty((n, 41), dtype=np.uint8)
        text[:, :5] = np.frombuffer(b"uuid:", dtype=np.uint8)
        for at, lo, hi in ((5, 0, 8), (14, 8, 12), (20, 13, 16), (25, 17, 20), (29, 20, 32)):
            text[:, at : at + hi - lo] = hexes[:, lo:hi]
        for at, byte in ((13, b"-"), (18, b"-"), (19, b"4"), (23, b"-"), (24, b"a"), (28, b"-")):
            text[:, at] = ord(byte)
        return pl.Series("_uuid", text.reshape(-1).view("S41"), dtype=pl.Binary).cast(pl.String)

    def _batteries(self) -> list[tuple[list[str], tuple[str, ...]]]:
        out = []
        for bat in self.cfg.quality.batteries:
            codes = self.form.choices(bat.items[0]).names
            out.append((list(bat.items), codes))
        return out

    def make_bad(self, answers: pl.DataFrame, bad: np.ndarray) -> pl.DataFrame:
        """Replace the answers of bad respondents by what each bad kind does."""
        updates: dict[str, pl.Series] = {}

        def put(name: str, rows: np.ndarray, values: np.ndarray) -> None:
            """Write `values` into the rows `rows` of the column (the bad kinds' rows are
            disjoint, so the order of writes does not matter)."""
            col = updates.get(name, answers.get_column(name))
            dtype = answers.schema[name]
            if dtype == pl.String:
                new = pl.Series(name, [None if v is None else str(v) for v in values.tolist()])
                new = new.cast(pl.String)
            else:
                nums = np.array([np.nan if v is None else float(v) for v in values.tolist()])
                new = pl.Series(name, nums).fill_nan(None).cast(dtype)
            updates[name] = col.scatter(rows, new) if len(rows) else col

        straight = np.flatnonzero(bad == "straightliner")
        bogus = np.flatnonzero(bad == "bogus")
        for items, codes in self._batteries():
            same = np.array(codes, dtype=object)[self.rng.integers(0, len(codes), len(straight))]
            for item in items:
                put(item, straight, same)
            agree = [c for c in codes if c in ("4", "5")] or list(codes[-2:])
            for j, item in enumerate(items):
                picks = np.array(agree, dtype=object)[self.rng.integers(0, len(agree), len(bogus))]
                if j < 2 and len(agree) > 1:  # agreeing, but not all identically
                    picks[:] = agree[j]
                put(item, bogus, picks)
        failing = np.flatnonzero(bad == "attention")
        for check in self.cfg.quality.attention_checks:
            tree = parse(check.pass_).tree
            right = tree.args[1].value if tree.kind == "bin" and len(tree.args) == 2 else None
            f = self.form.fields[check.field]
            if f.type == "select_one":
                wrong = [c for c in self.form.choices(f.name).names if c != str(right)]
                put(
                    f.name,
                    failing,
                    np.array(wrong, dtype=object)[self.rng.integers(0, len(wrong), len(failing))],
                )
            elif f.type in ("integer", "decimal") and right is not None:
                shift = self.rng.choice(np.array([-3, -2, -1, 1, 2, 3]), len(failing))
                put(f.name, failing, float(right) + shift)  # type: ignore[arg-type]
        return answers.with_columns(list(updates.values())) if updates else answers

    def paradata(
        self,
        answers: pl.DataFrame,
        modes: np.ndarray,
        bad: np.ndarray,
        uuids: pl.Series,
        strata: np.ndarray,
        order: np.ndarray,
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Times: start, end, submission, duration, and seconds per page. `strata` numbers
        each submission's stratum (any integer code), `order` its place in the invitations."""
        n = answers.height
        pages = self._pages()
        counts = answers.select(
            [
                pl.sum_horizontal([pl.col(c).is_not_null() for c in cols]).alias(page)
                for page, cols in pages.items()
            ]
        )
        per_page = counts.to_numpy().astype(float)
        pace_cfg = self.sim.pace if self.sim else {"web": 8.0, "phone": 15.0}
        pace = np.where(modes == "phone", pace_cfg.get("phone", 15.0), pace_cfg.get("web", 8.0))
        person = np.exp(0.15 * self.rng.standard_normal(n))
        pace = pace * person
        pace = np.where(bad == "speeder", pace * self.rng.uniform(0.12, 0.35, n), pace)
        pace = np.where(bad == "phone_timing", self.rng.uniform(0.4, 1.4, n), pace)
        page_s = per_page * pace[:, None] * np.exp(0.2 * self.rng.standard_normal(per_page.shape))
        overhead = np.where(np.isin(bad, ["speeder", "phone_timing"]), 5.0, 30.0)
        duration = page_s.sum(axis=1) + overhead
        start_day = self.study.config.fieldwork.start
        days = (self.study.config.fieldwork.end - start_day).days + 1
        day = self.rng.integers(0, days, n)
        second = self.rng.integers(8 * 3600, 22 * 3600, n)
        # within a stratum, the invited answer in the order they were invited
        at = day * 86400 + second
        # each stratum's times, sorted, given to its submissions in invitation order
        by_order = np.lexsort((order, strata))
        by_time = np.lexsort((at, strata))
        at[by_order] = at[by_time]
        base = dt.datetime.combine(start_day, dt.time(0, 0), tzinfo=TZ)
        instants = (int(base.timestamp()) + at.astype(np.int64)) * 1_000_000  # UTC, µs
        start = (
            pl.Series("start", instants, dtype=pl.Int64)
            .cast(pl.Datetime("us"))
            .dt.replace_time_zone("UTC")
            .dt.convert_time_zone("Asia/Shanghai")
        )
        meta = pl.DataFrame(
            {
                "start": start,
                "_duration_s": np.round(duration, 1),
            }
        ).with_columns(
            (pl.col("start") + pl.duration(milliseconds=(pl.col("_duration_s") * 1000))).alias(
                "end"
            )
        )
        delay = pl.Series(self.rng.integers(1, 120, n) * 1_000_000).cast(pl.Duration("us"))
        meta = meta.with_columns(
            (pl.col("end") + delay).alias("_submitted"),
            pl.col("start").dt.date().alias("today"),
        )
        seconds = np.round(page_s, 1).reshape(-1)
        keep = np.flatnonzero(seconds > 0)  # (submission, page), submission-major
        long = pl.DataFrame(
            {
                "_uuid": uuids.gather(keep // len(pages)).alias("_uuid"),
                "page": pl.Series(list(pages), dtype=pl.String).gather(keep % len(pages)),
                "seconds": seconds[keep],
                # the submission's and the page's index, to sort by integers (see respond)
                "_i": pl.Series(keep // len(pages), dtype=pl.Int64),
                "_j": pl.Series(keep % len(pages), dtype=pl.Int64),
            }
        )
        return meta, long

    def _pages(self) -> dict[str, list[str]]:
        """The questionnaire's pages (its top-level groups, else the question itself) and the
        questions on each, in questionnaire order."""
        pages: dict[str, list[str]] = {}
        for f in self.form.walk():
            if f.answerable and not f.generated and not f.repeats:
                page = f.ancestors[0] if f.ancestors else f.name
                pages.setdefault(page, []).append(f.name)
        return pages

    def respond(self, chosen: pl.DataFrame) -> tuple[GroupResponses, pl.DataFrame]:
        rows = chosen["_row"].to_numpy()
        bad_col = chosen.get_column("_bad").cast(pl.String)
        bad = bad_col.fill_null("good").to_numpy()
        mode_col = chosen.get_column("_mode").cast(pl.String)
        modes = mode_col.to_numpy()
        answers = self.make_bad(self.pop.frame[rows], bad)
        # duplicates: some good submissions are sent a second time from the same device
        dup_rate = self.settings.bad.duplicate if self.settings else 0.0
        dup = np.flatnonzero((bad == "good") & (self.rng.random(len(bad)) < dup_rate))
        n = answers.height
        uuids = self._uuids(n + len(dup))
        phone = mode_col == "phone"
        own = pl.DataFrame({"_uuid": uuids[:n], "phone": phone})
        device = own.select(
            pl.concat_str(
                pl.when("phone").then(pl.lit("collect")).otherwise(pl.lit("enketo")),
                pl.lit(":"),
                pl.col("_uuid").str.slice(5, 8),
                pl.col("_uuid").str.slice(-6),
            ).alias("_deviceid")
        ).to_series()
        meta, pages = self.paradata(
            answers,
            modes,
            bad,
            uuids[:n],
            chosen.get_column("_stratum").rank("dense").to_numpy(),
            chosen["_order"].to_numpy(),
        )
        interviewers = self.settings.interviewers if self.settings else 40
        staff = pl.Series([f"I{k:03d}" for k in range(1, interviewers + 1)], dtype=pl.String)
        interviewer = staff.gather(self.rng.integers(0, len(staff), n))
        if self.strat in answers.columns:
            stated = answers.get_column(self.strat).cast(pl.String)
        else:
            stated = pl.repeat(None, n, dtype=pl.String, eager=True)
        codes = pl.Series([p.code for p in self.study.frames.geography], dtype=pl.String)
        elsewhere = self.rng.random(n) < (self.settings.ip_elsewhere if self.settings else 0.0)
        located = codes.gather(self.rng.integers(0, len(codes), n))
        paradata = pl.DataFrame(
            {
                "phone": phone,
                "elsewhere": elsewhere,
                "located": located,
                "stated": stated,
                "staff": interviewer,
            }
        ).select(
            pl.when(~pl.col("phone"))
            .then(pl.when("elsewhere").then("located").otherwise("stated"))
            .alias("_ip_province"),
            pl.when("phone").then("staff").alias("_interviewer"),
        )
        subs = answers.drop("_unit").with_columns(
            uuids[:n].alias("_uuid"),
            meta["_submitted"],
            mode_col.alias("_mode"),
            device,
            *paradata.get_columns(),
            meta["_duration_s"],
        )
        declared = [
            c
            for c in (meta["start"], meta["end"], meta["today"], device.alias("deviceid"))
            if c.name in self.form.fields
        ]
        subs = subs.with_columns(declared)
        sample = chosen.select("_unit", "_stratum", "_mode", "_order", "_quota").with_columns(
            uuids[:n].alias("_uuid"), bad_col.alias("_bad")
        )
        if len(dup):
            copies = subs[dup].with_columns(
                uuids[n:].alias("_uuid"),
                pl.col("_submitted")
                + pl.Series(self.rng.integers(1, 72, len(dup)) * 3_600_000_000).cast(
                    pl.Duration("us")
                ),
            )
            subs = pl.concat([subs, copies])
            sample = pl.concat(
                [
                    sample,
                    sample[dup].with_columns(
                        uuids[n:].alias("_uuid"), pl.lit("duplicate").alias("_bad")
                    ),
                ]
            )
            copy_of = pl.Series(dup, dtype=pl.Int64)
            again = pl.Series(np.arange(n, n + len(dup)), dtype=pl.Int64)
            pages = pl.concat(
                [
                    pages,
                    pages.filter(pl.col("_i").is_in(copy_of.implode())).with_columns(
                        pl.col("_uuid").replace(uuids.gather(dup), uuids[n:]),
                        pl.col("_i").replace_strict(copy_of, again),
                    ),
                ]
            )
        subs = self._split_multiples(subs)
        units = sample.select("_unit", "_uuid")
        repeats = {
            name: child.join(units, left_on="_parent_unit", right_on="_unit", how="inner")
            .rename({"_uuid": "_parent_uuid"})
            .drop("_parent_unit")
            .select("_parent_uuid", "_index", pl.exclude("_parent_uuid", "_index"))
            .sort("_parent_uuid", "_index")
            for name, child in self.pop.repeats.items()
        }
        meta_cols = [
            "_uuid",
            "_submitted",
            "_mode",
            "_deviceid",
            "_ip_province",
            "_interviewer",
            "_duration_s",
        ]
        subs = _conform(subs.select(*meta_cols, pl.exclude(*meta_cols)), self.form)
        subs = subs.sort("_submitted", "_uuid")
        # pages by `_uuid` then `page`: the same order as sorting by the two strings, from the
        # ranks of the submissions' ids and of the page names
        by_uuid = uuids.rank("dense").cast(pl.Int64).to_numpy() - 1
        by_page = pl.Series(list(self._pages()), dtype=pl.String).rank("dense").cast(pl.Int64)
        key = (
            by_uuid[pages.get_column("_i").to_numpy()] * (len(by_page) + 1)
            + (by_page.to_numpy()[pages.get_column("_j").to_numpy()])
        )
        pages = pages.sort(pl.Series(key)).drop("_i", "_j")
        return GroupResponses(self.group, subs, repeats, pages), sample

    def _split_multiples(self, subs: pl.DataFrame) -> pl.DataFrame:
        """One 0/1 column per choice of each select_multiple (null where unanswered), as
        ODK/Kobo exports have: worked out once per distinct answer, then joined back."""
        cols: list[pl.Series] = []
        for f in self.form.walk():
            if f.type != "select_multiple" or f.repeats or f.name not in subs.columns:
                continue
            tokens = pl.col(f.name).str.split(" ")
            ticks = [
                pl.when(pl.col(f.name).is_null())
                .then(None)
                .otherwise(tokens.list.contains(code).cast(pl.Int8))
                .alias(choice_column(f.name, code))
                for code in self.form.choices(f.name).names
            ]
            table = subs.select(pl.col(f.name).unique()).with_columns(ticks)
            joined = subs.select(f.name).join(
                table, on=f.name, how="left", nulls_equal=True, maintain_order="left"
            )
            cols += joined.drop(f.name).get_columns()
        return subs.with_columns(cols) if cols else subs


def _conform(frame: pl.DataFrame, form: Form) -> pl.DataFrame:
    """The interchange types (responses.table_schema): instants in UTC milliseconds."""
    casts = []
    for name, dtype in table_schema(form).items():
        if name not in frame.columns or frame.schema[name] == dtype:
            continue
        col = pl.col(name)
        if dtype == pl.Date and frame.schema[name] == pl.String:
            casts.append(col.str.to_date("%Y-%m-%d").alias(name))
            continue
        if dtype == pl.String and frame.schema[name].is_numeric():
            # a calculated number as text, written as XPath's string() writes it: 5, not 5.0
            as_text = parse(f"string(${{{name}}})")
            text = to_polars(as_text, {name: "number"}, result="string")
            casts.append(pl.when(col.is_null()).then(None).otherwise(text).alias(name))
            continue
        if isinstance(dtype, pl.Datetime) and isinstance(frame.schema[name], pl.Datetime):
            col = col.dt.convert_time_zone(dtype.time_zone or "UTC").dt.cast_time_unit(
                dtype.time_unit
            )
        casts.append(col.cast(dtype).alias(name))
    return frame.with_columns(casts) if casts else frame


def close_quotas(study: Study, fieldwork: Fieldwork, max_rounds: int = 10) -> Fieldwork:
    """Stop each stratum's fieldwork when its quota of *valid* responses is met, as a
    fieldwork system closing quotas on screened completes does: later arrivals are dropped.
    Screening again after the cut can move a borderline speeder (the median shifts), so the
    cut is repeated until it holds."""
    from impactstudy.quality import screen

    for _ in range(max_rounds):
        valid = screen(fieldwork.responses, study, audit=False)  # the flags are enough
        keep: dict[str, pl.DataFrame] = {}
        changed = False
        for gid, sample in fieldwork.sample.items():
            flags = valid.groups[gid].submissions.select("_uuid", "_valid")
            s = sample.join(flags, on="_uuid", how="left").sort("_stratum", "_order", "_uuid")
            s = s.with_columns(
                pl.col("_valid").cast(pl.Int64).cum_sum().over("_stratum").alias("_cum")
            )
            short = s.group_by("_stratum").agg(pl.col("_cum").max(), pl.col("_quota").first())
            short = short.filter(pl.col("_cum") < pl.col("_quota"))
            if short.height:
                row = short.row(0, named=True)
                raise QuotaShortError(
                    f"{gid}: province {row['_stratum']} has {row['_cum']} valid responses for "
                    f"a quota of {row['_quota']}; invite more (raise the fieldwork buffer)"
                )
            cut = (
                s.filter(pl.col("_cum") >= pl.col("_quota"))
                .group_by("_stratum")
                .agg(pl.col("_order").min().alias("_cut"))
            )
            kept = s.join(cut, on="_stratum").filter(pl.col("_order") <= pl.col("_cut"))
            changed |= kept.height != sample.height
            keep[gid] = kept.select(sample.columns).sort("_stratum", "_order", "_uuid")
        if not changed:
            return fieldwork
        fieldwork = _restrict(fieldwork, keep)
    raise SimulationError(f"quotas did not settle after {max_rounds} rounds of screening")


def _restrict(fieldwork: Fieldwork, keep: dict[str, pl.DataFrame]) -> Fieldwork:
    groups: dict[str, GroupResponses] = {}
    for gid, gr in fieldwork.responses.groups.items():
        ids = keep[gid].get_column("_uuid").implode()
        groups[gid] = GroupResponses(
            gid,
            gr.submissions.filter(pl.col("_uuid").is_in(ids)),
            {n: c.filter(pl.col("_parent_uuid").is_in(ids)) for n, c in gr.repeats.items()},
            None if gr.paradata is None else gr.paradata.filter(pl.col("_uuid").is_in(ids)),
        )
    responses = Responses(
        fieldwork.responses.study_id, groups, dict(fieldwork.responses.provenance)
    )
    return Fieldwork(responses, keep)


def run_fieldwork(
    study: Study, populations: dict[str, Population], seed: int, buffer: float = 0.03
) -> Fieldwork:
    """Invite, collect and time the responses of every group; `buffer` is the share of
    extra good respondents invited beyond each quota, for those screening will drop."""
    groups: dict[str, GroupResponses] = {}
    samples: dict[str, pl.DataFrame] = {}
    for gid, pop in populations.items():
        g = _Group(study, pop, seed)
        g.buffer = buffer
        chosen = g.select()
        groups[gid], samples[gid] = g.respond(chosen)
    responses = Responses(study.id, groups, {"source": "simulate", "seed": seed})
    return Fieldwork(responses, samples)
