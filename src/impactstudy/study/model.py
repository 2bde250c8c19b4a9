"""The loaded study: configuration, questionnaires, frames, indicators, model and history."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from impactstudy.forms import Expression, Form
from impactstudy.study import schema
from impactstudy.study.simspec import SimulationFile


@dataclass(frozen=True)
class Source:
    """Where a number comes from."""

    source: str
    note: str = ""


@dataclass(frozen=True)
class Province:
    code: str
    names: dict[str, str]
    region: str
    population: int
    year: int
    source: str


@dataclass(frozen=True)
class Population:
    group: str
    population: float
    unit: str
    year: int
    basis: str
    source: str
    note: str = ""


@dataclass(frozen=True)
class Statistic:
    key: str
    value: float
    unit: str
    year: int
    source: str


@dataclass(frozen=True)
class Margin:
    """Population shares of one variable's categories, for weighting."""

    group: str
    variable: str
    shares: dict[str, float]
    sources: tuple[str, ...]


@dataclass(frozen=True)
class HistoryPoint:
    series: str
    year: int
    value: float
    unit: str
    definition: str
    source: str


@dataclass
class Frames:
    geography: list[Province] = field(default_factory=list)
    populations: dict[str, Population] = field(default_factory=dict)
    margins: dict[str, dict[str, Margin]] = field(default_factory=dict)
    statistics: dict[str, Statistic] = field(default_factory=dict)

    def value(self, key: str) -> float:
        """`frame.<key>` in model formulas: a statistic, or `population.<group>`."""
        if key.startswith("population."):
            return self.populations[key.split(".", 1)[1]].population
        return self.statistics[key].value

    def keys(self) -> set[str]:
        return set(self.statistics) | {f"population.{g}" for g in self.populations}


@dataclass
class Indicator:
    spec: schema.IndicatorSpec
    expression: Expression
    domain: Expression | None = None
    denominator: Expression | None = None

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def groups(self) -> tuple[str, ...]:
        return self.spec.groups


@dataclass
class Group:
    id: str
    spec: schema.Group
    form: Form

    @property
    def label(self) -> dict[str, str]:
        return self.spec.label


@dataclass
class Study:
    """A whole study, validated: what every later stage starts from."""

    path: Path
    config: schema.StudyConfig
    groups: dict[str, Group]
    frames: Frames
    indicators: dict[str, Indicator]
    model: schema.ModelFile
    history: list[HistoryPoint]
    #: simulation.toml, when the study ships one
    simulation: SimulationFile | None = None

    @property
    def id(self) -> str:
        return self.config.study.id

    @property
    def languages(self) -> list[str]:
        return self.config.study.languages

    def title(self, language: str | None = None) -> str:
        t = self.config.study.title
        return t.get(language or self.config.study.default_language) or next(iter(t.values()))

    def history_value(self, series: str, year: int) -> float:
        for h in self.history:
            if h.series == series and h.year == year:
                return h.value
        raise KeyError(f"{series}.{year}")
