"""Schemas of the study's TOML files: study.toml, indicators.toml, model.toml.

Unknown keys are errors (a misspelt key must not be silently ignored).
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Slug = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
StudyId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
Mode = Literal["web", "phone"]
Text = dict[str, str]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StudyInfo(Strict):
    id: StudyId
    title: Text
    subtitle: Text | None = None
    year: Annotated[int, Field(ge=1990, le=2100)]
    languages: Annotated[list[str], Field(min_length=1)]
    default_language: str
    publisher: Text | None = None
    currency: str = "CNY"
    description: Text | None = None

    @model_validator(mode="after")
    def _default_language_is_a_language(self) -> StudyInfo:
        if self.default_language not in self.languages:
            raise ValueError(
                f"default_language {self.default_language!r} is not one of languages "
                f"{self.languages}"
            )
        return self


class Fieldwork(Strict):
    start: dt.date
    end: dt.date
    modes: Annotated[list[Mode], Field(min_length=1)]
    timezone: str = "Asia/Shanghai"

    @model_validator(mode="after")
    def _window(self) -> Fieldwork:
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        return self


class Frames(Strict):
    geography: str
    populations: str
    margins: str | None = None
    statistics: str | None = None


class Sample(Strict):
    target_valid: Annotated[int, Field(gt=0)]
    stratify_by: str = "province"
    allocation_note: str | None = None


class AttentionCheck(Strict):
    field: str
    #: boolean expression, true for an attentive respondent
    pass_: Annotated[str, Field(alias="pass")]


class Battery(Strict):
    name: Slug
    items: Annotated[list[str], Field(min_length=2)]
    reverse_keyed: list[str] = []

    @model_validator(mode="after")
    def _reverse_in_items(self) -> Battery:
        extra = [r for r in self.reverse_keyed if r not in self.items]
        if extra:
            raise ValueError(f"reverse_keyed {extra} are not items of battery {self.name!r}")
        return self


class GroupQuality(Strict):
    attention_checks: list[AttentionCheck] = []
    batteries: list[Battery] = []


class GroupWeighting(Strict):
    method: Literal["rake", "poststratify", "linear", "logit", "none"] = "rake"
    margins: list[str] = []


class GroupSample(Strict):
    target_valid: Annotated[int, Field(gt=0)]
    modes: dict[Mode, Annotated[float, Field(ge=0, le=1)]]
    allocation: Literal["proportional", "equal", "sqrt"] = "proportional"
    min_per_stratum: Annotated[int, Field(ge=0)] = 0

    @field_validator("modes")
    @classmethod
    def _shares_sum_to_one(cls, v: dict[str, float]) -> dict[str, float]:
        if not v:
            raise ValueError("at least one mode is needed")
        total = sum(v.values())
        if not math.isclose(total, 1.0, abs_tol=1e-9):
            raise ValueError(f"mode shares sum to {total:g}, not 1")
        return v


class Group(Strict):
    label: Text
    unit: Literal["person", "organisation"]
    questionnaire: str
    description: Text | None = None
    sample: GroupSample
    weighting: GroupWeighting = GroupWeighting()
    quality: GroupQuality = GroupQuality()


QualityKind = Literal[
    "speeder",
    "straightliner",
    "attention",
    "duplicate",
    "bogus",
    "impossible_timing",
    "incomplete",
]


class QualityRule(Strict):
    id: Slug
    kind: QualityKind
    threshold: float
    action: Literal["exclude", "flag"] = "exclude"
    modes: list[Mode] | None = None
    description: Text | None = None
    source: str | None = None


class Quality(Strict):
    rule: list[QualityRule] = []

    @field_validator("rule")
    @classmethod
    def _unique(cls, v: list[QualityRule]) -> list[QualityRule]:
        ids = [r.id for r in v]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"quality rule ids {dup} are used more than once")
        return v


class Trim(Strict):
    """Bounds on weights relative to their mean; the excess is redistributed."""

    lower: Annotated[float, Field(gt=0)] | None = None
    upper: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Trim:
        if self.lower is not None and self.upper is not None and not self.lower < self.upper:
            raise ValueError(f"lower {self.lower} must be below upper {self.upper}")
        if self.lower is not None and self.lower >= 1:
            raise ValueError(f"lower {self.lower} must be below 1 (the mean weight)")
        if self.upper is not None and self.upper <= 1:
            raise ValueError(f"upper {self.upper} must be above 1 (the mean weight)")
        return self


class Weighting(Strict):
    max_iterations: Annotated[int, Field(gt=0)] = 100
    tolerance: Annotated[float, Field(gt=0)] = 1e-8
    trim: Trim | None = None
    variance: Literal["taylor", "jk1", "jkn", "brr", "bootstrap"] = "taylor"
    replicates: Annotated[int, Field(gt=1)] | None = None


class Report(Strict):
    title: Text | None = None
    formats: list[Literal["html", "pdf", "xlsx"]] = ["html", "pdf", "xlsx"]
    sections: list[str] = []
    confidence: Annotated[float, Field(gt=0, lt=1)] = 0.95


class StudyConfig(Strict):
    study: StudyInfo
    fieldwork: Fieldwork
    frames: Frames
    sample: Sample
    groups: Annotated[dict[Slug, Group], Field(min_length=1)]
    quality: Quality = Quality()
    weighting: Weighting = Weighting()
    report: Report = Report()


# --- indicators.toml ----------------------------------------------------------------------


class Published(Strict):
    text: str
    value: float | None = None
    relation: Literal["=", "approx", ">", ">=", "<", "<="] = "="
    note: str | None = None


Statistic = Literal["proportion", "mean", "total", "ratio", "quantile"]


class IndicatorSpec(Strict):
    id: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")]
    label: Text
    group: str | Annotated[list[str], Field(min_length=1)]
    statistic: Statistic
    expression: str
    denominator: str | None = None
    quantile: Annotated[float, Field(gt=0, lt=1)] | None = None
    domain: str | None = None
    unit: str
    section: str | None = None
    published: Published | None = None
    note: str | None = None

    @property
    def groups(self) -> tuple[str, ...]:
        return (self.group,) if isinstance(self.group, str) else tuple(self.group)

    @model_validator(mode="after")
    def _statistic_arguments(self) -> IndicatorSpec:
        if self.statistic == "ratio" and not self.denominator:
            raise ValueError("a ratio needs a denominator")
        if self.statistic != "ratio" and self.denominator:
            raise ValueError(f"denominator is only for ratios, not {self.statistic}")
        if self.statistic == "quantile" and self.quantile is None:
            raise ValueError("a quantile needs quantile = p (0 < p < 1)")
        if self.statistic != "quantile" and self.quantile is not None:
            raise ValueError(f"quantile is only for quantiles, not {self.statistic}")
        return self


class IndicatorsFile(Strict):
    indicator: Annotated[list[IndicatorSpec], Field(min_length=1)]


# --- model.toml -----------------------------------------------------------------------------


class Prior(Strict):
    dist: Literal["beta", "uniform", "triangular", "normal", "lognormal", "fixed"]
    a: float | None = None
    b: float | None = None
    low: float | None = None
    mode: float | None = None
    high: float | None = None
    mean: float | None = None
    sd: float | None = None
    meanlog: float | None = None
    sdlog: float | None = None
    value: float | None = None

    @model_validator(mode="after")
    def _parameters(self) -> Prior:
        need = {
            "beta": ("a", "b"),
            "uniform": ("low", "high"),
            "triangular": ("low", "mode", "high"),
            "normal": ("mean", "sd"),
            "lognormal": ("meanlog", "sdlog"),
            "fixed": ("value",),
        }[self.dist]
        given = {k for k, v in self.model_dump().items() if v is not None and k != "dist"}
        missing = [k for k in need if k not in given]
        extra = sorted(given - set(need))
        if missing:
            raise ValueError(
                f"a {self.dist} prior needs {', '.join(need)}; missing {', '.join(missing)}"
            )
        if extra:
            raise ValueError(f"a {self.dist} prior takes {', '.join(need)}, not {', '.join(extra)}")
        if self.dist == "beta" and not (self.a and self.a > 0 and self.b and self.b > 0):
            raise ValueError("beta needs a > 0 and b > 0")
        if self.dist in ("uniform", "triangular"):
            lo, hi = self.low, self.high
            assert lo is not None and hi is not None
            if not lo < hi:
                raise ValueError("low must be below high")
            if self.dist == "triangular" and not (self.mode is not None and lo <= self.mode <= hi):
                raise ValueError("mode must lie between low and high")
        if self.dist == "normal" and not (self.sd and self.sd > 0):
            raise ValueError("sd must be > 0")
        if self.dist == "lognormal" and not (self.sdlog and self.sdlog > 0):
            raise ValueError("sdlog must be > 0")
        return self


class Param(Strict):
    label: Text
    unit: str
    prior: Prior
    presets: dict[str, float] = {}
    source: str | None = None


class Quantity(Strict):
    label: Text
    unit: str
    formula: str
    headline: bool = False
    note: str | None = None


class ModelSettings(Strict):
    draws: Annotated[int, Field(gt=0)] = 10_000
    seed: Annotated[int, Field(ge=0)] = 0
    presets: list[str] = ["caict", "net"]
    default_preset: str = "net"


class InputOutput(Strict):
    table: str
    employment: str | None = None
    sectors: list[str] = []
    note: str | None = None


class ModelFile(Strict):
    model: ModelSettings = ModelSettings()
    param: dict[Slug, Param] = {}
    quantity: Annotated[dict[Slug, Quantity], Field(min_length=1)]
    io: InputOutput | None = None
