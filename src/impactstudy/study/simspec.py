"""Schema of simulation.toml: how a study's synthetic ecosystem is generated.

Optional in a study folder. It says how large each synthetic population is, how fields are
distributed where the defaults (uniform choices, margins, constraint bounds) are not realistic,
the values of figures the report gives only as a phrase, and population totals the impact
model is calibrated to. Targets of published figures come from indicators.toml itself.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from impactstudy.study.schema import Mode, Slug, Strict

Dist = Literal[
    "categorical",
    "uniform",
    "lognormal",
    "normal",
    "share_of",
    "margin_ranges",
    "constant",
    "text",
]


class Generator(Strict):
    """How one field is drawn (before calibration to the study's targets)."""

    dist: Dist = "categorical"
    #: categorical: probability of each choice (select_one), or of ticking it (select_multiple)
    probs: dict[str, Annotated[float, Field(ge=0, le=1)]] = Field(default_factory=dict)
    low: float | None = None
    high: float | None = None
    median: Annotated[float, Field(gt=0)] | None = None
    sigma: Annotated[float, Field(gt=0)] | None = None
    mean: float | None = None
    sd: Annotated[float, Field(gt=0)] | None = None
    min: float | None = None
    max: float | None = None
    digits: Annotated[int, Field(ge=0, le=6)] | None = None
    #: share_of: the field this one is a part of (e.g. WeChat staff of all staff)
    of: str | None = None
    #: margin_ranges: the calculate whose margin the value follows, and each category's range
    margin: str | None = None
    ranges: dict[str, tuple[float, float]] = Field(default_factory=dict)
    value: float | str | None = None
    values: list[str] = Field(default_factory=list)
    note: str | None = None

    @model_validator(mode="after")
    def _parameters(self) -> Generator:
        need: dict[str, tuple[str, ...]] = {
            "categorical": ("probs",),
            "uniform": ("low", "high"),
            "lognormal": ("median", "sigma"),
            "normal": ("mean", "sd"),
            "share_of": ("of", "mean"),
            "margin_ranges": ("margin", "ranges"),
            "constant": ("value",),
            "text": ("values",),
        }
        missing = [k for k in need[self.dist] if getattr(self, k) in (None, {}, [])]
        if missing:
            raise ValueError(f"dist {self.dist!r} needs {', '.join(missing)}")
        if self.dist == "uniform" and not (self.low or 0) < (self.high or 0):
            raise ValueError("low must be below high")
        if self.dist == "share_of" and self.mean is not None and not 0 <= self.mean <= 1:
            raise ValueError("mean of a share_of must be between 0 and 1")
        for code, (lo, hi) in self.ranges.items():
            if not lo <= hi:
                raise ValueError(f"range of {code!r} must have low <= high")
        return self


def _per_mode(web: float, phone: float) -> dict[Mode, float]:
    return {"web": web, "phone": phone}


class ResponseModel(Strict):
    """Who answers: a base response rate per mode, shifted on the log-odds scale by
    expressions over the unit's true answers (young urban users answer the web more often)."""

    rate: dict[Mode, Annotated[float, Field(gt=0, lt=1)]] = Field(
        default_factory=lambda: _per_mode(0.1, 0.25)
    )
    #: XLSForm boolean expression -> log-odds shift when true
    effects: dict[str, float] = Field(default_factory=dict)


class BadRates(Strict):
    """Shares of respondents of each bad kind (duplicates: of good ones sent twice).
    Defaults from the survey-quality literature: docs/simulation.md."""

    speeder: Annotated[float, Field(ge=0, lt=1)] = 0.05
    straightliner: Annotated[float, Field(ge=0, lt=1)] = 0.03
    attention: Annotated[float, Field(ge=0, lt=1)] = 0.04
    duplicate: Annotated[float, Field(ge=0, lt=1)] = 0.01
    bogus: Annotated[float, Field(ge=0, lt=1)] = 0.02
    phone_timing: Annotated[float, Field(ge=0, lt=1)] = 0.01


class GroupSimulation(Strict):
    #: number of synthetic units; each stands for population / size real units
    size: Annotated[int, Field(gt=0)]
    fields: dict[str, Generator] = Field(default_factory=dict)
    #: values, in the indicator's unit, for figures whose published text is a phrase
    targets: dict[str, float] = Field(default_factory=dict)
    #: population totals (real units) of numeric fields, e.g. WeChat staff
    totals: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)
    response: ResponseModel = Field(default_factory=ResponseModel)
    #: seconds per answered item by mode (good respondents), before per-person variation
    pace: dict[Mode, Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: _per_mode(8.0, 15.0)
    )
    note: str | None = None


class SimulationSettings(Strict):
    seed: Annotated[int, Field(ge=0)] = 0
    bad: BadRates = Field(default_factory=BadRates)
    #: share of web respondents whose IP address locates another province (travel, VPN)
    ip_elsewhere: Annotated[float, Field(ge=0, le=1)] = 0.03
    interviewers: Annotated[int, Field(gt=0)] = 40
    note: str | None = None


class SimulationFile(Strict):
    simulation: SimulationSettings = SimulationSettings()
    groups: dict[Slug, GroupSimulation]
