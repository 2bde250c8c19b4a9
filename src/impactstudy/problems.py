"""One problem type for every stage: a message and the place it was found."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Problem:
    """A problem in a study file or a submission, with where it is.

    The place is whatever applies: a file, then a sheet, row and column (spreadsheets, CSV),
    or a TOML key; for submissions the field and repeat instance.
    """

    message: str
    file: str | None = None
    sheet: str | None = None
    row: int | None = None
    column: str | None = None
    key: str | None = None
    field: str | None = None
    instance: tuple[int, ...] = ()
    code: str = "invalid"

    @property
    def place(self) -> str:
        parts: list[str] = []
        if self.file:
            parts.append(self.file)
        if self.sheet:
            parts.append(f"sheet {self.sheet}")
        if self.row is not None:
            parts.append(f"row {self.row}")
        if self.column:
            parts.append(f"column {self.column}")
        if self.key:
            parts.append(f"key {self.key}")
        if self.field:
            where = self.field
            if self.instance:
                where += "".join(f"[{i + 1}]" for i in self.instance)
            parts.append(f"field {where}")
        return ", ".join(parts)

    def __str__(self) -> str:
        place = self.place
        return f"{place}: {self.message}" if place else self.message


def rel(path: Path, root: Path | None) -> str:
    """Path as shown in messages: relative to the study folder when inside it."""
    if root is not None:
        try:
            return str(path.relative_to(root))
        except ValueError:
            pass
    return str(path)
