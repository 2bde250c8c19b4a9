"""How the columns of one table (a form's submissions, or one repeat) may be headed in a file.

ODK Central heads a field by its group path joined with `-`, relative to its table
(`basic-province`; `child_age` in the repeat file), or by its bare name when exported without
group names. KoboToolbox heads it by its name or its `/`-joined path, or by its label in one of
the form's languages, with or without the labels of its groups (`A. About you/Province where you
live`); select_multiple choices get `<header>/<choice name or label>`. Our own files use the
Kobo-style path. Every spelling of every column is mapped here to what it holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from impactstudy.forms.model import Field, Form
from impactstudy.responses import FLAGS, INDEX, META, PARENT_UUID, choice_codes, table_fields

Source = Literal["impactstudy", "odk", "kobo"]
Kind = Literal["field", "choice", "meta", "ignore"]

#: meta columns of each source: header -> canonical name ("" = known, not kept)
_META: dict[tuple[Source, bool], dict[str, str]] = {
    ("impactstudy", False): {**{m: m for m in META}, FLAGS: FLAGS},
    ("impactstudy", True): {PARENT_UUID: PARENT_UUID, INDEX: INDEX, FLAGS: FLAGS},
    ("odk", False): {
        "SubmissionDate": "_submitted",
        "KEY": "odk:KEY",
        "meta-instanceID": "odk:instanceID",
        "instanceID": "odk:instanceID",
        "meta-instanceName": "",
        "meta-deprecatedID": "",
        "DeviceID": "odk:DeviceID",
        "SubmitterID": "",
        "SubmitterName": "",
        "AttachmentsPresent": "",
        "AttachmentsExpected": "",
        "Status": "",
        "ReviewState": "",
        "Edits": "",
        "FormVersion": "",
        "isValidated": "",
    },
    ("odk", True): {"PARENT_KEY": "odk:PARENT_KEY", "KEY": "odk:KEY"},
    ("kobo", False): {
        "_uuid": "kobo:_uuid",
        "_submission_time": "_submitted",
        "_index": "kobo:_index",
        "meta/instanceID": "kobo:instanceID",
        "instanceID": "kobo:instanceID",
        **dict.fromkeys(
            (
                "_id",
                "_validation_status",
                "_notes",
                "_status",
                "_submitted_by",
                "__version__",
                "_version",
                "_tags",
                "_xform_id_string",
                "_attachments",
                "_geolocation",
                "_duration",
                "_media_count",
                "_total_media",
                "_supplementalDetails",
                "meta/rootUuid",
                "meta/instanceName",
                "meta/deprecatedID",
                "formhub/uuid",
            ),
            "",
        ),
    },
    ("kobo", True): {
        "_index": "kobo:_index",
        "_parent_index": "kobo:_parent_index",
        "_parent_table_name": "",
    },
}
# a repeat sheet copies the submission's meta as `_submission_<name>`
_META[("kobo", True)].update(
    dict.fromkeys((f"_submission_{m}" for m in _META[("kobo", False)] if m.startswith("_")), "")
)
#: meta a table cannot do without, per source: canonical name -> (header, what it holds)
REQUIRED: dict[tuple[Source, bool], dict[str, tuple[str, str]]] = {
    ("impactstudy", False): {
        "_uuid": ("_uuid", "the instanceID of each submission"),
        "_submitted": ("_submitted", "the time each submission was received"),
    },
    ("impactstudy", True): {
        PARENT_UUID: (PARENT_UUID, "the instanceID of the submission each row belongs to"),
        INDEX: (INDEX, "the number of each row within its submission"),
    },
    ("odk", False): {
        "odk:KEY": ("KEY", "the instanceID of each submission"),
        "_submitted": ("SubmissionDate", "the time each submission was received"),
    },
    ("odk", True): {
        "odk:PARENT_KEY": ("PARENT_KEY", "the KEY of the submission each row belongs to"),
        "odk:KEY": ("KEY", "the key of each repeat row"),
    },
    ("kobo", False): {
        "kobo:_uuid": ("_uuid", "the instanceID of each submission"),
        "_submitted": ("_submission_time", "the time each submission was received"),
    },
    ("kobo", True): {
        "kobo:_parent_index": ("_parent_index", "the _index of the submission each row belongs to"),
    },
}


@dataclass(frozen=True)
class Target:
    """What a column holds: a field, one choice of a select_multiple, a meta column, or nothing
    we keep."""

    kind: Kind
    name: str
    choice: str | None = None
    #: the language of the label the header was spelled with (None: spelled with names)
    language: str | None = None


def norm(text: str) -> str:
    """Labels compared with their whitespace collapsed (exports keep labels as typed)."""
    return " ".join(text.split())


@dataclass
class Headers:
    """Every accepted spelling of a table's columns. Names win over labels; a label spelling
    that two columns share is ambiguous."""

    by_name: dict[str, Target] = field(default_factory=dict)
    by_label: dict[str, list[Target]] = field(default_factory=dict)

    def add_name(self, spelling: str, target: Target) -> None:
        self.by_name.setdefault(spelling, target)

    def add_label(self, spelling: str, target: Target) -> None:
        key = norm(spelling)
        if not key or key in self.by_name:
            return
        targets = self.by_label.setdefault(key, [])
        if all(
            (t.kind, t.name, t.choice) != (target.kind, target.name, target.choice) for t in targets
        ):
            targets.append(target)

    def resolve(self, header: str) -> Target | list[Target] | None:
        """The column a header means; a list when a label spelling is ambiguous."""
        if header in self.by_name:
            return self.by_name[header]
        key = norm(header)
        if key in self.by_name:
            return self.by_name[key]
        targets = self.by_label.get(key)
        if not targets:
            return None
        return targets[0] if len(targets) == 1 else targets


def _path_labels(form: Form, names: tuple[str, ...], language: str) -> list[str]:
    out = []
    for n in names:
        f = form.fields.get(n)
        out.append((f.labels.get(language) if f is not None else None) or n)
    return out


def headers(form: Form, repeat: str | None, source: Source) -> Headers:
    """The spellings of the columns of one table of `form` as `source` heads them."""
    h = Headers()
    for header, canonical in _META[(source, repeat is not None)].items():
        h.add_name(header, Target("meta" if canonical else "ignore", canonical or header))
    fields = table_fields(form, repeat)
    notes = [
        f
        for f in form.walk()
        if f.type in ("note", "instanceID") and (f.repeats[-1] if f.repeats else None) == repeat
    ]
    for f in [*fields, *notes]:
        kind: Kind = "field" if f.type not in ("note", "instanceID") else "ignore"
        target = Target(kind, f.name)
        relative = f.ancestors[f.ancestors.index(repeat) + 1 :] if repeat else f.ancestors
        name_spellings = [
            f.name,
            "/".join((*f.ancestors, f.name)),
            "/".join((*relative, f.name)),
            "-".join((*relative, f.name)),
            "-".join((*f.ancestors, f.name)),
        ]
        for s in name_spellings:
            h.add_name(s, target)
        codes = choice_codes(form, f) if f.type == "select_multiple" else ()
        for s in name_spellings:
            for code in codes:
                h.add_name(f"{s}/{code}", Target("choice", f.name, code))
        for lang in form.languages:
            label = f.labels.get(lang) or f.name
            label_spellings = [
                label,
                "/".join([*_path_labels(form, f.ancestors, lang), label]),
                "/".join([*_path_labels(form, relative, lang), label]),
            ]
            for s in label_spellings:
                h.add_label(s, Target(kind, f.name, language=lang))
            if not codes or f.choice_list is None:
                continue
            choices = {c.name: c for c in form.choice_lists[f.choice_list].choices}
            for code in codes:
                c = choices.get(code)
                choice_label = (c.labels.get(lang) if c is not None else None) or code
                for s in label_spellings:
                    h.add_label(f"{s}/{choice_label}", Target("choice", f.name, code, lang))
    return h


def choice_labels(form: Form, f: Field, language: str | None) -> dict[str, str]:
    """Choice label -> code for a select: the given language first, then the others, never
    overriding an earlier label (a label shared by two codes keeps the first)."""
    if f.choice_list is None:
        return {}
    languages = [language] if language else []
    languages += [lang for lang in form.languages if lang != language]
    out: dict[str, str] = {}
    for lang in languages:
        for c in form.choice_lists[f.choice_list].choices:
            label = c.labels.get(lang)
            if label:
                out.setdefault(norm(label), c.name)
    return out
