"""Quality: Responses screened into a ValidSample, with a flag column per rule and an audit of
every measure behind every exclusion.

`screen(responses, study)` applies the study's `[[quality.rule]]` list (docs/study-format.md
describes each kind, its measure and its threshold). Each rule adds a Boolean `_q_<id>`
column to its group's submissions; `_valid` is true where no rule whose action is `exclude`
fired. The audit has one row per submission x rule measure, with the measured value, the
threshold and the decision (exclude, flag or pass).
"""

from impactstudy.quality.measures import QualityError
from impactstudy.quality.sample import AUDIT, GroupSample, ValidSample, flag_column
from impactstudy.quality.screen import screen

__all__ = ["AUDIT", "GroupSample", "QualityError", "ValidSample", "flag_column", "screen"]
