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
    "out_of_scope",
    "impossible",
    "ip_province",
]
QualityAction = Literal["exclude", "flag"]

#: What a rule does when study.toml gives no `action`: flag first, exclude only on the
#: decisive kinds (the same case twice, a case outside the population, an interview too fast
#: to have been conducted). The effort indicators (speed, straightlining, attention,
#: acquiescence) and edit failures only flag; see docs/study-format.md, [[quality.rule]].
DEFAULT_ACTION: dict[str, QualityAction] = {
    "speeder": "flag",
    "straightliner": "flag",
    "attention": "flag",
    "duplicate": "exclude",
    "bogus": "flag",
    "impossible_timing": "exclude",
    "out_of_scope": "exclude",
    "impossible": "flag",
    "ip_province": "flag",
}

#: What `threshold` means for each kind, and the values it may take.
THRESHOLD: dict[str, str] = {
    "speeder": "share of the median duration of the group and mode, 0 < t <= 1",
    "straightliner": "longest run of identical answers as a share of a battery, 0 < t <= 1",
    "attention": "number of failed attention checks, a whole number >= 1",
    "duplicate": "share of identical answers with an earlier submission, 0 < t <= 1",
    "bogus": "share of positively and of negatively keyed items agreed with, 0 < t <= 1",
    "impossible_timing": "seconds per answered item, > 0",
}
_EXPRESSION_KINDS = frozenset({"out_of_scope", "impossible"})


class QualityRule(Strict):
    """One screening rule; `kind` fixes what is measured, `threshold` where it fires."""

    id: Slug
    kind: QualityKind
    threshold: float | None = None
    #: defaults by kind (DEFAULT_ACTION)
    action: QualityAction = "flag"
    modes: list[Mode] | None = None
    groups: list[str] | None = None
    #: out_of_scope, impossible: boolean expression, true for the responses the rule catches
    expression: str | None = None
    #: speeder: also fires when the median page takes under this many seconds per item
    min_seconds_per_item: Annotated[float, Field(gt=0)] | None = None
    #: straightliner: also fires when the answers to a battery vary this little (SD)
    max_sd: Annotated[float, Field(ge=0)] | None = None
    description: Text | None = None
    source: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_action(cls, data: object) -> object:
        if isinstance(data, dict) and "action" not in data and data.get("kind") in DEFAULT_ACTION:
            data = {**data, "action": DEFAULT_ACTION[data["kind"]]}
        return data

    @model_validator(mode="after")
    def _arguments(self) -> QualityRule:
        kind, t = self.kind, self.threshold
        if kind in _EXPRESSION_KINDS:
            if not self.expression:
                raise ValueError(f"a {kind} rule needs an expression")
        elif self.expression is not None:
            raise ValueError(f"expression is only for out_of_scope and impossible, not {kind}")
        if kind in THRESHOLD:
            needed = not (kind == "speeder" and self.min_seconds_per_item is not None)
            if t is None:
                if needed:
                    raise ValueError(f"a {kind} rule needs a threshold: {THRESHOLD[kind]}")
            elif kind == "attention":
                if t < 1 or t != int(t):
                    raise ValueError(f"threshold must be {THRESHOLD[kind]}")
            elif kind == "impossible_timing":
                if not t > 0:
                    raise ValueError(f"threshold must be {THRESHOLD[kind]}")
            elif not 0 < t <= 1:
                raise ValueError(f"threshold must be {THRESHOLD[kind]}")
        elif t is not None:
            raise ValueError(f"a {kind} rule takes no threshold")
        if self.min_seconds_per_item is not None and kind != "speeder":
            raise ValueError(f"min_seconds_per_item is only for speeder, not {kind}")
        if self.max_sd is not None and kind != "straightliner":
            raise ValueError(f"max_sd is only for straightliner, not {kind}")
        if kind == "ip_province" and self.action != "flag":
            raise ValueError(
                "ip_province can only flag: IP geolocation places mobile users in the "
                "province of their carrier, not where they are"
            )
        return self


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
    """Bounds on the calibration's g-weights (final / base weight): bounded calibration."""

    lower: Annotated[float, Field(gt=0)] | None = None
    upper: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Trim:
        if self.lower is not None and self.upper is not None and not self.lower < self.upper:
            raise ValueError(f"lower {self.lower} must be below upper {self.upper}")
        if self.lower is not None and self.lower >= 1:
            raise ValueError(f"lower {self.lower} must be below 1 (g = 1: the base weight)")
        if self.upper is not None and self.upper <= 1:
            raise ValueError(f"upper {self.upper} must be above 1 (g = 1: the base weight)")
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
    #: the published value this quantity reproduces: a history point (hist.<series>.<year>) or
    #: the value itself in the quantity's unit (say where it is from in `note`)
    published: str | float | None = None
    #: ids of the published figures (the report's figure table) this quantity stands for, so that
    #: the consistency audit can run on the model's own outputs
    figures: list[str] = []
    note: str | None = None


class ModelSettings(Strict):
    draws: Annotated[int, Field(gt=0)] = 10_000
    seed: Annotated[int, Field(ge=0)] = 0
    presets: list[str] = ["caict", "net"]
    default_preset: str = "net"


class IOJobs(Strict):
    """Jobs through the input-output table, per draw, from a quantity of the model.

    ``kind="indirect"``: route A of docs/impact-model.md: the quantity is direct jobs (persons)
    in the ``split`` sectors; the output they imply, f = D / l, gives Type I indirect jobs
    ``l'(L - I) f``. ``kind="final_demand"``: the quantity is spending (yuan) on the ``split``
    sectors' products; it gives jobs ``l' L f``. ``exclude``: sectors whose workers are already
    counted as direct (no jobs are added in them). ``induced``: also the Type II household-closure
    jobs, reported as ``io.<name>_induced``.
    """

    label: Text
    kind: Literal["indirect", "final_demand"]
    input: str
    split: Annotated[dict[str, Annotated[float, Field(gt=0)]], Field(min_length=1)]
    exclude: list[str] = []
    induced: bool = False
    note: str | None = None


class InputOutput(Strict):
    """The input-output part: which shipped NBS table, and the IO-derived quantities."""

    year: Literal[2017, 2018] = 2017
    sectors: Literal[42, 149, 153] = 149
    #: Dirichlet concentration of the perturbation of A's columns (larger: less spread)
    alpha: Annotated[float, Field(gt=0)] = 200.0
    jobs: dict[Slug, IOJobs] = {}
    note: str | None = None

    @model_validator(mode="after")
    def _table_exists(self) -> InputOutput:
        if (self.year, self.sectors) not in ((2017, 42), (2017, 149), (2018, 42), (2018, 153)):
            raise ValueError(
                f"no shipped table for {self.year} with {self.sectors} sectors "
                "(2017: 42 or 149; 2018: 42 or 153)"
            )
        return self


class ModelFile(Strict):
    model: ModelSettings = ModelSettings()
    param: dict[Slug, Param] = {}
    quantity: Annotated[dict[Slug, Quantity], Field(min_length=1)]
    io: InputOutput | None = None
