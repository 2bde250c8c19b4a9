"""Responses: a study's raw submissions, one table per questionnaire (the interchange artifact).

Made by `simulate` and by `ingest` (fieldwork, ODK Central, KoboToolbox exports), read by
`quality`. In memory, each group's submissions are a Polars frame with one row per submission:

- meta columns, named with a leading underscore (`META`): `_uuid` (the instanceID,
  "uuid:..."), `_submitted` (submission time), `_mode` ("web" or "phone"), `_deviceid`,
  `_ip_province` (the province the IP address locates, null when unknown), `_interviewer`
  (phone interviews; null on the web), `_duration_s` (end - start in seconds);
- one column per field of the form, named by its bare field name (names are unique in a
  form), calculations included: integer -> Int64, decimal -> Float64, date -> Date, start/end
  -> Datetime, everything else -> String (select_one codes; select_multiple as space-separated
  codes), null when unanswered;
- for each select_multiple, one Int8 0/1 column per choice named `<field>/<choice>`, as
  ODK Central and KoboToolbox split them (null when the question was not answered).

Each repeat is a child frame (`repeats[name]`) with `_parent_uuid` and `_index` (1-based)
followed by its fields. `paradata` holds per-page timings: `_uuid`, `page` (the group or
field shown as one page), `seconds`.

On disk (see `ingest`), the same tables are written as Parquet and CSV, with column headers
flattened the way KoboToolbox does (`group/subgroup/field`).

The dtypes, spelled out by `table_schema`: start, end, datetime fields and `_submitted` are
`DATETIME` (milliseconds, UTC: the instant, whatever offset the device recorded); today and
date fields are Date; `_duration_s` is Float64; calculations are String (an XForm calculation
has no declared type). A table read with `lenient=True` carries one more column, `_flags`
(`FLAGS`): the problems found in that row, `rule:field` entries joined by ";" (null when none).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import polars as pl

from impactstudy.forms.model import Field, Form

META: tuple[str, ...] = (
    "_uuid",
    "_submitted",
    "_mode",
    "_deviceid",
    "_ip_province",
    "_interviewer",
    "_duration_s",
)


#: the instant type of start, end, datetime fields and `_submitted`
DATETIME = pl.Datetime("ms", "UTC")
META_DTYPES: dict[str, pl.DataType] = {
    "_uuid": pl.String(),
    "_submitted": DATETIME,
    "_mode": pl.String(),
    "_deviceid": pl.String(),
    "_ip_province": pl.String(),
    "_interviewer": pl.String(),
    "_duration_s": pl.Float64(),
}
#: the columns that key a repeat's rows to their submission
PARENT_UUID = "_parent_uuid"
INDEX = "_index"
REPEAT_META_DTYPES: dict[str, pl.DataType] = {PARENT_UUID: pl.String(), INDEX: pl.Int64()}
PARADATA_DTYPES: dict[str, pl.DataType] = {
    "_uuid": pl.String(),
    "page": pl.String(),
    "seconds": pl.Float64(),
}
#: problems found in a row when read leniently (see the module docstring)
FLAGS = "_flags"
#: survey rows that hold no answer column (the instanceID is `_uuid`)
NO_COLUMN_TYPES = frozenset({"group", "repeat", "note", "instanceID"})

_FIELD_DTYPES: dict[str, pl.DataType] = {
    "integer": pl.Int64(),
    "decimal": pl.Float64(),
    "date": pl.Date(),
    "today": pl.Date(),
    "start": DATETIME,
    "end": DATETIME,
    "datetime": DATETIME,
}


def field_dtype(field_type: str) -> pl.DataType:
    """The column type of a field type (String unless numeric, date or instant)."""
    return _FIELD_DTYPES.get(field_type, pl.String())


def repeat_names(form: Form) -> list[str]:
    """The form's repeats, in document order: one child table each."""
    return [f.name for f in form.walk() if f.type == "repeat"]


def table_fields(form: Form, repeat: str | None = None) -> list[Field]:
    """The fields with a column in the submissions table (`repeat=None`) or in a repeat's table."""
    return [
        f
        for f in form.walk()
        if f.type not in NO_COLUMN_TYPES and (f.repeats[-1] if f.repeats else None) == repeat
    ]


def table_schema(form: Form, repeat: str | None = None) -> dict[str, pl.DataType]:
    """Every column of a table, in order: meta, then each field (a select_multiple followed by its
    0/1 choice columns)."""
    out: dict[str, pl.DataType] = dict(META_DTYPES if repeat is None else REPEAT_META_DTYPES)
    for f in table_fields(form, repeat):
        out[f.name] = field_dtype(f.type)
        if f.type == "select_multiple":
            for code in choice_codes(form, f):
                out[choice_column(f.name, code)] = pl.Int8()
    return out


def choice_codes(form: Form, f: Field) -> tuple[str, ...]:
    """The codes a select accepts: its choice list, plus "other" when it has `or_other`."""
    if f.choice_list is None:
        return ()
    codes = form.choice_lists[f.choice_list].names
    if form.accepts_other(f.name) and "other" not in codes:
        codes = (*codes, "other")
    return codes


def choice_column(field_name: str, choice: str) -> str:
    """The 0/1 column of one choice of a select_multiple."""
    return f"{field_name}/{choice}"


@dataclass
class GroupResponses:
    """The submissions to one questionnaire."""

    group: str
    submissions: pl.DataFrame
    repeats: dict[str, pl.DataFrame] = field(default_factory=dict)
    paradata: pl.DataFrame | None = None

    def __len__(self) -> int:
        return self.submissions.height


@dataclass
class Responses:
    """All submissions of a study, by group."""

    study_id: str
    groups: dict[str, GroupResponses]
    #: how they were made: {"source": "simulate", "seed": 1, ...} or the files they came from
    provenance: dict[str, object] = field(default_factory=dict)

    def __iter__(self) -> Iterator[GroupResponses]:
        return iter(self.groups.values())

    def __len__(self) -> int:
        return sum(len(g) for g in self.groups.values())
