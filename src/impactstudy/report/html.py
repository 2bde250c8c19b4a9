"""The report's context (what it says, in one language) and the report as one self-contained,
printable HTML page (Jinja2, charts inline as SVG)."""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import polars as pl
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from impactstudy.report import charts
from impactstudy.report.fmt import fmt_interval, fmt_value, scale_unit
from impactstudy.report.inputs import ReportInputs

__all__ = ["LANGUAGES", "html_page", "render_html", "report_context", "strings"]

HERE = Path(__file__).parent
LANGUAGES = ("zh", "en")
Row = dict[str, Any]


@cache
def strings() -> dict[str, Any]:
    """The report's own bilingual strings and layout (report/strings.toml)."""
    with (HERE / "strings.toml").open("rb") as fh:
        return tomllib.load(fh)


@cache
def _env() -> Environment:
    return Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html", "j2"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _pick(labels: Mapping[str, str] | None, lang: str, default: str = "") -> str:
    if not labels:
        return default
    return labels.get(lang) or labels.get("zh") or next(iter(labels.values()), default)


def _finite(x: object) -> float | None:
    if x is None:
        return None
    f = float(x)  # type: ignore[arg-type]
    return None if math.isnan(f) else f


def _inside(relation: str | None, value: float | None, low: float, high: float) -> bool | None:
    """Whether a published value (with its relation, e.g. ``>`` for 七成以上) agrees with the
    interval."""
    if value is None:
        return None
    if relation in (">", ">="):
        return high >= value
    if relation in ("<", "<="):
        return low <= value
    return low <= value <= high


class _Builder:
    """Turns the inputs into the template's context for one language."""

    def __init__(self, inputs: ReportInputs, lang: str) -> None:
        if lang not in LANGUAGES:
            raise ValueError(f"language {lang!r}: the report is written in {LANGUAGES}")
        self.inputs = inputs
        self.study = inputs.study
        self.lang = lang
        self.s = strings()
        self.overall = inputs.estimates.overall()
        self.truth: dict[str, float] = {}
        if inputs.truth is not None:
            self.truth = dict(
                zip(
                    inputs.truth["indicator"].to_list(),
                    inputs.truth["value"].to_list(),
                    strict=True,
                )
            )
        model = self.study.model
        self.presets: list[str] = list(inputs.runs)
        if model is not None and model.model.default_preset in self.presets:
            self.presets.remove(model.model.default_preset)
            self.presets.insert(0, model.model.default_preset)
        self.summaries = {p: inputs.runs[p].summary for p in self.presets}

    # -- small helpers ---------------------------------------------------------------------

    def t(self, key: str) -> str:
        return str(self.s["text"][key][self.lang])

    def group_label(self, groups: str) -> str:
        sep = "、" if self.lang == "zh" else ", "
        cfg = self.study.config.groups
        return sep.join(
            _pick(cfg[g].label, self.lang, g) if g in cfg else g for g in groups.split(",")
        )

    def indicator_label(self, ind_id: str, fallback: str = "") -> str:
        ind = self.study.indicators.get(ind_id)
        return _pick(ind.spec.label, self.lang, fallback) if ind is not None else fallback

    def quantity_label(self, name: str) -> str:
        model = self.study.model
        if model is not None and name in model.quantity:
            return _pick(model.quantity[name].label, self.lang, name)
        return name

    def input_label(self, name: str) -> str:
        """A model input's label: an indicator, a parameter or a frame statistic."""
        kind, _, key = name.partition(".")
        model = self.study.model
        if kind == "est":
            return self.indicator_label(key, key)
        if kind == "param" and model is not None and key in model.param:
            return _pick(model.param[key].label, self.lang, key)
        return name

    def section_info(self, name: str, index: int) -> dict[str, Any]:
        info = self.s["sections"].get(name, {})
        return {
            "name": name,
            "title": name if self.lang == "zh" else info.get("en", name),
            "id": info.get("id", f"section-{index}"),
            "model_units": list(info.get("model_units", [])),
        }

    # -- rows ------------------------------------------------------------------------------

    def figure_row(self, r: Mapping[str, Any]) -> Row:
        """A survey estimate with its interval, n, published value and truth."""
        unit = str(r["unit"] or "")
        est = float(r["estimate"])
        low, high = float(r["ci_low"]), float(r["ci_high"])
        pv = _finite(r["published_value"])
        truth = self.truth.get(str(r["indicator"]))
        inside = _inside(r["relation"], pv, low, high)
        truth_inside = None if truth is None else low <= truth <= high
        return {
            "id": r["indicator"],
            "href": f"#prov-{r['indicator']}",
            "label": self.indicator_label(r["indicator"], str(r["label"] or "")),
            "group": self.group_label(str(r["groups"])),
            "value": repr(est),
            "text": fmt_value(est, unit, self.lang),
            "interval": fmt_interval(low, high, unit, self.lang, est),
            "n": f"{int(r['n']):,}",
            "published": r["published_text"] or "",
            "published_value": pv,
            "inside": self._yes_no(inside),
            "inside_ok": inside,
            "truth": fmt_value(truth, unit, self.lang) if truth is not None else None,
            "truth_inside": self._yes_no(truth_inside),
            "truth_ok": truth_inside,
            "raw": (est, low, high, unit),
        }

    def _yes_no(self, flag: bool | None) -> str:
        return "—" if flag is None else self.t("yes" if flag else "no")

    def quantity_rows(self, names: Sequence[str]) -> list[Row]:
        """Model quantities under every preset: median and 5–95% interval, and the published
        value."""
        rows: list[Row] = []
        by_preset = {
            p: {r["quantity"]: r for r in summ.iter_rows(named=True)}
            for p, summ in self.summaries.items()
        }
        for name in names:
            cells: list[dict[str, str] | None] = []
            unit = ""
            published: float | None = None
            for p in self.presets:
                r = by_preset[p].get(name)
                if r is None:
                    cells.append(None)
                    continue
                unit = str(r["unit"])
                published = published if published is not None else _finite(r["published"])
                med = float(r["median"])
                cells.append(
                    {
                        "value": repr(med),
                        "text": fmt_value(med, unit, self.lang),
                        "interval": fmt_interval(
                            float(r["p05"]), float(r["p95"]), unit, self.lang, med
                        ),
                    }
                )
            rows.append(
                {
                    "id": name,
                    "href": f"#q-{name}",
                    "label": self.quantity_label(name),
                    "cells": cells,
                    "published": fmt_value(published, unit, self.lang) if published else "—",
                }
            )
        return rows

    def quantities(self, *, units: Sequence[str] = (), headline: bool = False) -> list[str]:
        if not self.presets:
            return []
        summ = self.summaries[self.presets[0]]
        if headline:
            summ = summ.filter(pl.col("headline") | pl.col("published").is_not_null())
        else:
            summ = summ.filter(pl.col("unit").is_in(list(units)))
        return [str(q) for q in summ["quantity"].to_list()]

    # -- charts ----------------------------------------------------------------------------

    def survey_charts(self, rows: Sequence[Row]) -> list[Markup]:
        out = []
        units: dict[str, list[Row]] = {}
        for r in rows:
            units.setdefault(r["raw"][3], []).append(r)
        for unit, group in units.items():
            ref = max(abs(r["raw"][0]) for r in group)
            div, suffix = scale_unit(ref, unit, self.lang)
            bars = [
                charts.Bar(
                    label=_short(f"{r['id']} {r['label']}", 30),
                    value=r["raw"][0] / div,
                    low=r["raw"][1] / div,
                    high=r["raw"][2] / div,
                    mark=None if r["published_value"] is None else r["published_value"] / div,
                )
                for r in group
            ]
            out.append(
                Markup(
                    charts.bar_chart(
                        bars, xlabel=suffix.strip() or unit, mark_label=self.t("published")
                    )
                )
            )
        return out

    def waterfall(self) -> Markup | None:
        layout = self.s["charts"]
        if not self.presets:
            return None
        summ = self.summaries[self.presets[0]]
        med = dict(zip(summ["quantity"].to_list(), summ["median"].to_list(), strict=True))
        names = [q for q in layout["waterfall"] if q in med]
        total_name = layout["waterfall_total"]
        if not names or total_name not in med:
            return None
        total = float(med[total_name])
        div, suffix = scale_unit(total, "persons", self.lang)
        parts = [(self.quantity_label(q), float(med[q]) / div) for q in names]
        rest = total / div - sum(v for _, v in parts)
        if abs(rest) > 1e-9 * abs(total / div):
            parts.append((self.t("adjustment"), rest))
        preset = self.s["presets"].get(self.presets[0], {}).get(self.lang, self.presets[0])
        return Markup(
            charts.waterfall_chart(
                parts,
                (self.t("total"), total / div),
                ylabel=suffix.strip(),
                title=f"{self.t('waterfall')} · {preset}",
                fmt=lambda v: f"{v:,.0f}" if abs(v) >= 100 else f"{v:.1f}",
            )
        )

    def tornado(self, quantity: str) -> Markup | None:
        if not self.presets:
            return None
        sens = self.inputs.runs[self.presets[0]].sensitivity.filter(pl.col("quantity") == quantity)
        if sens.height == 0:
            return None
        sens = sens.sort("swing", descending=True).head(10)
        summ = self.summaries[self.presets[0]].filter(pl.col("quantity") == quantity)
        unit = str(summ["unit"][0]) if summ.height else ""
        central = float(sens["central"][0])
        div, suffix = scale_unit(central, unit, self.lang)
        rows = [
            (_short(self.input_label(str(r["input"])), 26), r["at_low"] / div, r["at_high"] / div)
            for r in sens.iter_rows(named=True)
        ]
        return Markup(
            charts.tornado_chart(
                rows,
                central / div,
                xlabel=suffix.strip() or unit,
                title=f"{self.t('tornado')}: {self.quantity_label(quantity)}",
            )
        )

    def history(self, names: Sequence[str]) -> Markup | None:
        year = self.study.config.study.year
        points = [h for h in self.study.history if h.series in names and h.year < year]
        if not points or not self.presets:
            return None
        # the history is published (gross) figures: compare with the caict-style preset when
        # there is one, else with the default
        preset = "caict" if "caict" in self.summaries else self.presets[0]
        summ = {r["quantity"]: r for r in self.summaries[preset].iter_rows(named=True)}
        unit = points[0].unit
        ref = max(abs(h.value) for h in points)
        div, suffix = scale_unit(ref, unit, self.lang)
        series = []
        for name in names:
            pts = sorted((h.year, h.value / div) for h in points if h.series == name)
            if not pts:
                continue
            r = summ.get(name)
            ours = None if r is None else (r["median"] / div, r["p05"] / div, r["p95"] / div)
            series.append(
                (self.quantity_label(name), [p[0] for p in pts], [p[1] for p in pts], ours)
            )
        return Markup(
            charts.history_chart(series, year=year, ylabel=suffix.strip(), title=self.t("history"))
        )

    def province(self) -> tuple[Markup | None, str | None]:
        """The by-province chart of the first listed indicator that has province rows."""
        table = self.inputs.estimates.table.filter(pl.col("by") == "province")
        if table.height == 0:
            return None, None
        have = set(table["indicator"].unique().to_list())
        wanted = [i for i in self.s["charts"]["province_indicators"] if i in have]
        ind = wanted[0] if wanted else sorted(have)[0]
        rows = table.filter(pl.col("indicator") == ind).sort("estimate", descending=True)
        names = {p.code: _pick(p.names, self.lang, p.code) for p in self.study.frames.geography}
        unit = str(rows["unit"][0] or "")
        ref = float(rows["estimate"].abs().max())  # type: ignore[arg-type]
        div, suffix = scale_unit(ref, unit, self.lang)
        bars = [
            charts.Bar(
                label=names.get(str(r["domain"]), str(r["domain"])),
                value=r["estimate"] / div,
                low=r["ci_low"] / div,
                high=r["ci_high"] / div,
            )
            for r in rows.iter_rows(named=True)
        ]
        title = f"{ind} {self.indicator_label(ind)}"
        chart = charts.bar_chart(
            bars, xlabel=suffix.strip() or unit, mark_label="", title=_short(title, 40)
        )
        section = self.study.indicators[ind].spec.section if ind in self.study.indicators else None
        return Markup(chart), section

    # -- appendix --------------------------------------------------------------------------

    def appendix(self) -> dict[str, Any]:
        lang = self.lang
        cfg = self.study.config
        wsum = {r["group"]: r for r in self.inputs.weighted.summary().iter_rows(named=True)}
        vt = (
            self.inputs.valid.table()
            .group_by("group")
            .agg(pl.col("submissions").sum(), pl.col("excluded").sum(), pl.col("valid").sum())
        )
        vtab = {r["group"]: r for r in vt.iter_rows(named=True)}
        groups = []
        for gid, g in cfg.groups.items():
            w = wsum.get(gid, {})
            v = vtab.get(gid, {})
            groups.append(
                {
                    "id": gid,
                    "label": _pick(g.label, lang, gid),
                    "description": _pick(g.description, lang),
                    "submissions": f"{v.get('submissions', 0):,}",
                    "excluded": f"{v.get('excluded', 0):,}",
                    "n": f"{w.get('n', v.get('valid', 0)):,}",
                    "population": fmt_value(_finite(w.get("population")), "", lang) if w else "—",
                    "deff": f"{w['deff_weighting']:.3f}" if w else "—",
                    "steps": w.get("steps", ""),
                }
            )
        qsum = (
            self.inputs.valid.summary()
            .group_by("rule")
            .agg(pl.col("fired").sum(), pl.col("excluded").sum(), pl.col("excluded_alone").sum())
        )
        qtab = {r["rule"]: r for r in qsum.iter_rows(named=True)}
        rules = [
            {
                "id": r.id,
                "description": _pick(r.description, lang),
                "action": self.s["actions"].get(r.action, {}).get(lang, r.action),
                "fired": f"{qtab.get(r.id, {}).get('fired', 0):,}",
                "excluded": f"{qtab.get(r.id, {}).get('excluded', 0):,}",
                "source": r.source or "",
            }
            for r in cfg.quality.rule
        ]
        margins = self.inputs.weighted.margins()
        margin_rows = []
        if margins.height:
            m = (
                margins.with_columns(
                    ((pl.col("achieved") - pl.col("target")).abs() / pl.col("target")).alias("err")
                )
                .group_by("group", "margin", maintain_order=True)
                .agg(pl.len().alias("categories"), pl.col("err").max().alias("max_err"))
            )
            margin_rows = [
                {
                    "group": self.group_label(str(r["group"])),
                    "margin": r["margin"],
                    "categories": r["categories"],
                    "max_err": f"{r['max_err']:.1e}",
                }
                for r in m.iter_rows(named=True)
            ]
        prov = self.inputs.estimates.provenance
        variance = self.t("variance_text").format(
            method=f"{cfg.weighting.variance} ({prov.get('method', '')})",
            ci=prov.get("ci", ""),
            level=prov.get("level", ""),
        )
        fw = cfg.fieldwork
        modes = [self.s["modes"].get(m, {}).get(lang, m) for m in fw.modes]
        return {
            "groups": groups,
            "window": f"{fw.start.isoformat()} – {fw.end.isoformat()}",
            "modes": ("、" if lang == "zh" else ", ").join(modes),
            "description": _pick(cfg.study.description, lang),
            "rules": rules,
            "margins": margin_rows,
            "variance": variance,
            "model": self.model_appendix(),
            "provenance": self.provenance(),
        }

    def model_appendix(self) -> dict[str, Any] | None:
        model = self.study.model
        if model is None:
            return None
        quantities = [
            {
                "id": name,
                "label": _pick(q.label, self.lang, name),
                "unit": q.unit,
                "formula": q.formula,
            }
            for name, q in model.quantity.items()
        ]
        params = []
        for name, p in model.param.items():
            prior = p.prior.model_dump(exclude_none=True)
            dist = prior.pop("dist")
            args = ", ".join(
                f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in prior.items()
            )
            params.append(
                {
                    "id": name,
                    "label": _pick(p.label, self.lang, name),
                    "prior": f"{dist}({args})",
                    "presets": ", ".join(f"{k}: {v:g}" for k, v in p.presets.items()),
                    "source": p.source or "",
                }
            )
        first = next(iter(self.inputs.runs.values()), None)
        draws = first.provenance.get("draws", model.model.draws) if first else model.model.draws
        seed = first.seed if first else model.model.seed
        io = model.io
        text = self.t("model_text").format(
            draws=f"{draws:,}" if isinstance(draws, int) else draws,
            seed=seed,
            io_year=io.year if io is not None else "—",
            sectors=io.sectors if io is not None else "—",
        )
        return {"text": text, "quantities": quantities, "params": params, "io": io is not None}

    def provenance(self) -> list[Row]:
        rows = []
        for r in self.overall.iter_rows(named=True):
            rows.append(
                {
                    "id": r["indicator"],
                    "label": self.indicator_label(r["indicator"], str(r["label"] or "")),
                    "group": self.group_label(str(r["groups"])),
                    "statistic": r["statistic"],
                    "question": r["question"] or "",
                    "expression": r["expression"] or "",
                    "domain": r["domain_expression"] or self.t("all"),
                    "n": f"{int(r['n']):,}",
                    "n_eff": f"{r['n_eff']:,.0f}" if _finite(r["n_eff"]) is not None else "—",
                    "deff": f"{r['deff']:.2f}" if _finite(r["deff"]) is not None else "—",
                    "method": f"{r['method']}; {r['ci_method']}",
                    "quality": r["quality_steps"] or self.t("none"),
                    "weighting": r["weighting_steps"] or self.t("none"),
                }
            )
        return rows

    def audit(self) -> list[Row] | None:
        aud = self.inputs.audit
        if aud is None:
            return None
        col = f"explanation_{self.lang}"
        rows = []
        for r in aud.iter_rows(named=True):
            verdict = str(r.get("verdict", ""))
            rows.append(
                {
                    "check": r.get("check", ""),
                    "verdict": self.s["verdicts"].get(verdict, {}).get(self.lang, verdict),
                    "verdict_class": verdict,
                    "stated": r.get("stated_text", ""),
                    "implied": r.get("implied_text", ""),
                    "admissible": r.get("admissible", ""),
                    "explanation": r.get(col) or r.get("explanation_en", ""),
                }
            )
        order = {"conflict": 0, "tension": 1}
        rows.sort(key=lambda x: order.get(str(x["verdict_class"]), 2))
        return rows

    # -- the whole page --------------------------------------------------------------------

    def context(self) -> dict[str, Any]:
        info = self.study.config.study
        published = self.overall.filter(pl.col("published_text").is_not_null())
        pub_rows = [self.figure_row(r) for r in published.iter_rows(named=True)]
        by_section: dict[str, list[Row]] = {}
        for r in self.overall.iter_rows(named=True):
            ind = self.study.indicators.get(r["indicator"])
            if ind is not None and ind.spec.section:
                by_section.setdefault(ind.spec.section, []).append(self.figure_row(r))
        layout = self.s["charts"]
        unit_of = {}
        if self.presets:
            summ = self.summaries[self.presets[0]]
            unit_of = dict(zip(summ["quantity"].to_list(), summ["unit"].to_list(), strict=True))
        province_chart, province_section = self.province()
        sections = []
        names = [n for n in self.study.config.report.sections]
        for i, name in enumerate(names):
            info_s = self.section_info(name, i)
            if info_s["id"] == "appendix":
                continue
            units = info_s["model_units"]
            figs = by_section.get(name, [])
            sec_charts: list[dict[str, Any]] = []
            if "persons" in units:
                wf = self.waterfall()
                if wf is not None:
                    sec_charts.append({"svg": wf, "note": self.t("waterfall_note")})
            hist_names = [q for q in layout["history"] if unit_of.get(q) in units]
            if hist_names:
                hc = self.history(hist_names)
                if hc is not None:
                    sec_charts.append({"svg": hc, "note": self.t("history_note")})
            for q in layout["tornado"]:
                if unit_of.get(q) in units:
                    tc = self.tornado(q)
                    if tc is not None:
                        sec_charts.append({"svg": tc, "note": self.t("tornado_note")})
            sections.append(
                {
                    **info_s,
                    "quantities": self.quantity_rows(self.quantities(units=units)) if units else [],
                    "figures": figs,
                    "figure_charts": self.survey_charts(figs),
                    "charts": sec_charts,
                    "province": province_chart if province_section == name else None,
                    "province_missing": province_chart is None and i == 0,
                }
            )
        appendix_name = next(
            (n for i, n in enumerate(names) if self.section_info(n, i)["id"] == "appendix"), None
        )
        return {
            "lang": self.lang,
            "t": self.s["text"],
            "L": self.lang,
            "title": _pick(info.title, self.lang),
            "subtitle": _pick(info.subtitle, self.lang),
            "publisher": _pick(info.publisher, self.lang),
            "description": _pick(info.description, self.lang),
            "year": info.year,
            "presets": [self.s["presets"].get(p, {}).get(self.lang, p) for p in self.presets],
            "headline": self.quantity_rows(self.quantities(headline=True)),
            "sections": sections,
            "published": pub_rows,
            "has_truth": bool(self.truth),
            "audit": self.audit(),
            "appendix_title": self.t("appendix")
            if appendix_name is None or self.lang == "en"
            else f"{appendix_name}：{self.t('appendix').split('：')[-1]}",
            "appendix": self.appendix(),
            "generated": self.t("generated").format(seed=self.inputs.seed),
        }


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def report_context(inputs: ReportInputs, lang: str = "zh") -> dict[str, Any]:
    """What the report says in ``lang`` (``zh`` or ``en``): every number formatted with its
    interval and link, the charts as SVG, the appendix. The HTML page and the PDF are both
    made from it (`html_page`, `impactstudy.report.pdf.write_pdf`)."""
    return _Builder(inputs, lang).context()


def html_page(context: Mapping[str, Any]) -> str:
    """The report context as one self-contained HTML page (charts inline)."""
    return _env().get_template("report.html.j2").render(**context)


def render_html(inputs: ReportInputs, lang: str = "zh") -> str:
    """The report as one self-contained HTML page in ``lang`` (``zh`` or ``en``)."""
    return html_page(report_context(inputs, lang))
