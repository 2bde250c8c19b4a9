"""Study: a study folder (study.toml, XLSForm questionnaires, frames, indicators, model,
history) loaded and validated into a `Study`, the artifact every later stage starts from."""

from importlib.resources import files
from pathlib import Path

from impactstudy.study.load import StudyError, load
from impactstudy.study.model import Frames, Group, HistoryPoint, Indicator, Study

DEFAULT_STUDY = "wechat-2018"


def bundled_study(name: str = DEFAULT_STUDY) -> Path:
    """Folder of a study shipped inside the package (the default: the WeChat 2018 study)."""
    return Path(str(files("impactstudy") / "studies" / name))


__all__ = [
    "DEFAULT_STUDY",
    "Frames",
    "Group",
    "HistoryPoint",
    "Indicator",
    "Study",
    "StudyError",
    "bundled_study",
    "load",
]
