"""The one error of the ingest stage and the rule codes of the problems it lists."""

from __future__ import annotations

from impactstudy.problems import Problem

#: problems that stop a read even when lenient: the file cannot be read as a table of this
#: questionnaire at all
FATAL = frozenset(
    {
        "encoding",
        "format",
        "unreadable",
        "missing_column",
        "duplicate_column",
        "ambiguous_column",
        "unknown_group",
        "manifest",
    }
)
#: at most this many rows are named per file, column and rule; a last problem counts the rest
ROWS_NAMED = 20


class IngestError(Exception):
    """Files that cannot be read into Responses; `problems` lists every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))
