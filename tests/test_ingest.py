"""Ingest: ODK Central and KoboToolbox exports of the minimal study's resident questionnaire read
into the Responses contract, our own format written and read back byte for byte, and bad files
each giving the problem (file, row, column, message) they must.

The fixtures in fixtures/exports/ are shaped as the tools write them (see its README.md).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from impactstudy.ingest import FORMAT, FORMAT_VERSION, IngestError, read_responses, write_responses
from impactstudy.problems import Problem
from impactstudy.responses import (
    DATETIME,
    FLAGS,
    GroupResponses,
    Responses,
    choice_codes,
    repeat_names,
    table_fields,
    table_schema,
)
from impactstudy.study import Study, bundled_study, load

HERE = Path(__file__).parent
EXPORTS = HERE / "fixtures" / "exports"
BAD = EXPORTS / "bad"
UUIDS = [
    "uuid:2b7e1f0a-5c3d-4e8f-9a1b-0c2d3e4f5a61",
    "uuid:8d4c6b2e-1f3a-4b5c-8d7e-9f0a1b2c3d72",
    "uuid:c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e83",
]
DEVICES = ["collect:Gz8k2LmQp4Rt7Wx1", "collect:Sh3nQ9vLx2Kp8Tz5", "collect:Bj7tRw4Ym1Nc6Qs9"]


@pytest.fixture(scope="module")
def study() -> Study:
    return load(HERE / "studies" / "minimal")


@pytest.fixture(scope="module")
def wechat() -> Study:
    return load(bundled_study())


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(dt.UTC)


def expected_submissions(study: Study) -> pl.DataFrame:
    """The three submissions every resident fixture holds, written out by hand."""
    i8 = pl.Int8
    columns = {
        "_uuid": UUIDS,
        "_submitted": [utc(f"{t}+00:00") for t in ("2018-10-08T01:20:11", "2018-10-09T12:05:40")]
        + [utc("2018-10-10T03:33:30+00:00")],
        "_mode": [None] * 3,
        "_deviceid": DEVICES,
        "_ip_province": [None] * 3,
        "_interviewer": [None] * 3,
        "_duration_s": [461.44, 227.867, 191.75],
        "start": [
            utc("2018-10-08T09:12:03.120+08:00"),
            utc("2018-10-09T20:01:15.004+08:00"),
            utc("2018-10-10T11:30:00.250+08:00"),
        ],
        "end": [
            utc("2018-10-08T09:19:44.560+08:00"),
            utc("2018-10-09T20:05:02.871+08:00"),
            utc("2018-10-10T11:33:12.000+08:00"),
        ],
        "province": ["guangdong", "shanghai", "beijing"],
        "gender": ["female", "male", "female"],
        "age": [34, 52, 19],
        "age_band": ["young", "older", "young"],
        "pays": ["yes", "yes", "no"],
        "pay_scenes": ["retail catering", "transport", None],
        "pay_scenes/retail": pl.Series([1, 0, None], dtype=i8),
        "pay_scenes/catering": pl.Series([1, 0, None], dtype=i8),
        "pay_scenes/transport": pl.Series([0, 1, None], dtype=i8),
        "pay_scenes/none": pl.Series([0, 0, None], dtype=i8),
        "spend_month": [1200.0, 300.5, None],
        "incr_share": [15.0, 10.0, None],
        "incr_spend": ["180", "30.05", None],
        "n_children": [2, 1, 0],
        "v_useful": ["3", "2", "1"],
        "v_tired": ["1", "2", "3"],
        "att_months": [12, 12, 11],
    }
    schema = table_schema(study.groups["resident"].form)
    return pl.DataFrame(columns).select(pl.col(c).cast(t) for c, t in schema.items())


def expected_children() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "_parent_uuid": [UUIDS[0], UUIDS[0], UUIDS[1]],
            "_index": [1, 2, 1],
            "child_age": [7, 3, 25],
        }
    )


@pytest.fixture(scope="module")
def reference(study: Study) -> GroupResponses:
    got = read_responses(EXPORTS / "odk_central" / "resident.csv", study)
    return got.groups["resident"]


# --- real export shapes -------------------------------------------------------------------


def test_odk_central_csv_reads_to_the_contract(study: Study, reference: GroupResponses) -> None:
    assert_frame_equal(reference.submissions, expected_submissions(study))
    assert_frame_equal(reference.repeats["children"], expected_children())
    assert reference.submissions.schema["start"] == DATETIME


NO_DEVICE = ["_deviceid"]  # KoboToolbox keeps no device id unless the form asks for one

VARIANTS = [
    # file, read options, columns that differ from the ODK Central read, repeats read
    ("odk_central_split/resident.csv", {}, [], True),
    ("kobo/resident_xml.csv", {}, NO_DEVICE, False),
    ("kobo/resident_labels_en.csv", {}, NO_DEVICE, False),
    ("kobo/resident_labels_zh.xlsx", {}, NO_DEVICE, True),
    ("kobo/resident_xml.xlsx", {"timezone": "Asia/Shanghai"}, NO_DEVICE, True),
]


@pytest.mark.parametrize(("name", "options", "differ", "with_repeats"), VARIANTS)
def test_every_export_shape_reads_the_same(
    study: Study,
    reference: GroupResponses,
    name: str,
    options: dict[str, str],
    differ: list[str],
    with_repeats: bool,
) -> None:
    got = read_responses(EXPORTS / name, study, **options)  # type: ignore[arg-type]
    assert list(got.groups) == ["resident"]  # found by form id, title or columns
    gr = got.groups["resident"]
    assert_frame_equal(gr.submissions.drop(differ), reference.submissions.drop(differ))
    if with_repeats:
        assert_frame_equal(gr.repeats["children"], reference.repeats["children"])
    else:
        assert gr.repeats["children"].height == 0
        assert "hold no repeats" in str(got.provenance["warnings"])


def test_labels_headers_are_reported(study: Study) -> None:
    got = read_responses(EXPORTS / "kobo" / "resident_labels_zh.xlsx", study)
    assert got.provenance["headers"] == "labels (zh)"
    assert got.provenance["source"] == "KoboToolbox export"


def test_typed_xlsx_date_times_without_offset_are_utc_by_default(
    study: Study, reference: GroupResponses
) -> None:
    got = read_responses(EXPORTS / "kobo" / "resident_xml.xlsx", study).groups["resident"]
    shift = got.submissions["start"] - reference.submissions["start"]
    assert shift.to_list() == [dt.timedelta(hours=8)] * 3  # the wall-clock time, read as UTC
    assert got.submissions["_submitted"].equals(reference.submissions["_submitted"])


def test_central_zip(study: Study, reference: GroupResponses, tmp_path: Path) -> None:
    archive = tmp_path / "resident.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in sorted((EXPORTS / "odk_central").iterdir()):
            z.write(f, f.name)
        z.writestr("media/1539000000000.jpg", b"\xff\xd8")
    gr = read_responses(archive, study).groups["resident"]
    assert_frame_equal(gr.submissions, reference.submissions)
    assert_frame_equal(gr.repeats["children"], reference.repeats["children"])


def test_kobo_choice_columns_alone(study: Study, reference: GroupResponses, tmp_path: Path) -> None:
    """KoboToolbox's "separate columns" option: no summary column, the codes come from 0/1."""
    frame = pl.read_csv(EXPORTS / "kobo" / "resident_xml.csv", separator=";", infer_schema=False)
    path = tmp_path / "resident.csv"
    frame.drop("spending/pay_scenes").write_csv(path, separator=";", quote_style="always")
    got = read_responses(path, study).groups["resident"]
    assert_frame_equal(got.submissions.drop(NO_DEVICE), reference.submissions.drop(NO_DEVICE))


def test_repeat_in_a_group_with_dates(wechat: Study, tmp_path: Path) -> None:
    """A repeat inside a group (Central keys its rows `uuid/sec_mp/mini_programs[n]`), a date
    field in it, a deviceid field, and a bad date."""
    root = tmp_path / "mp_developer.csv"
    root.write_text(
        "SubmissionDate,start,end,today,deviceid,sec_mp-n_mini_programs,KEY\n"
        "2018-10-20T02:00:00.000Z,2018-10-20T09:00:00.000+08:00,2018-10-20T09:10:00.000+08:00,"
        "2018-10-20,collect:abc,2,uuid:m1\n",
        encoding="utf-8",
    )
    (tmp_path / "mp_developer-mini_programs.csv").write_text(
        "mp_name,mp_launch_date,PARENT_KEY,KEY\n"
        "跑腿小助手,2018-03-02,uuid:m1,uuid:m1/sec_mp/mini_programs[1]\n"
        "点餐,2018-13-40,uuid:m1,uuid:m1/sec_mp/mini_programs[2]\n",
        encoding="utf-8",
    )
    with pytest.raises(IngestError) as e:
        read_responses(root, wechat)
    (p,) = e.value.problems
    assert (p.file, p.row, p.column, p.code) == (
        "mp_developer-mini_programs.csv",
        3,
        "mp_launch_date",
        "not_date",
    )
    got = read_responses(root, wechat, lenient=True).groups["mp_developer"]
    sub, mps = got.submissions, got.repeats["mini_programs"]
    assert sub["today"].to_list() == [dt.date(2018, 10, 20)]
    assert sub["_deviceid"].to_list() == ["collect:abc"]
    assert sub["_duration_s"].to_list() == [600.0]
    assert mps["_parent_uuid"].to_list() == ["uuid:m1", "uuid:m1"]
    assert mps["_index"].to_list() == [1, 2]
    assert mps["mp_launch_date"].to_list() == [dt.date(2018, 3, 2), None]
    assert mps[FLAGS].to_list() == [None, "not_date:mp_launch_date"]


# --- our own format ----------------------------------------------------------------------


def digest(paths: list[Path]) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def with_paradata(gr: GroupResponses) -> Responses:
    paradata = pl.DataFrame(
        {"_uuid": UUIDS[:2], "page": ["basic", "spending"], "seconds": [12.5, 3.25]}
    )
    group = GroupResponses("resident", gr.submissions, dict(gr.repeats), paradata)
    return Responses("minimal", {"resident": group}, {"source": "test", "seed": 7})


def test_write_then_read_gives_the_same_frames(
    study: Study, reference: GroupResponses, tmp_path: Path
) -> None:
    responses = with_paradata(reference)
    paths = write_responses(responses, study, tmp_path / "a")
    assert [p.name for p in paths] == [
        "resident.parquet",
        "resident.csv",
        "resident__children.parquet",
        "resident__children.csv",
        "resident__paradata.parquet",
        "resident__paradata.csv",
        "manifest.json",
    ]
    back = read_responses(tmp_path / "a", study)
    gr = back.groups["resident"]
    assert_frame_equal(gr.submissions, reference.submissions)
    assert_frame_equal(gr.repeats["children"], reference.repeats["children"])
    assert gr.paradata is not None and responses.groups["resident"].paradata is not None
    assert_frame_equal(gr.paradata, responses.groups["resident"].paradata)
    assert back.provenance == {"source": "test", "seed": 7}
    # a second write of what was read: the same bytes
    again = write_responses(back, study, tmp_path / "b")
    assert digest(again) == digest(paths)


def test_files_on_disk(study: Study, reference: GroupResponses, tmp_path: Path) -> None:
    write_responses(with_paradata(reference), study, tmp_path)
    header = (tmp_path / "resident.csv").read_text(encoding="utf-8").splitlines()[0].split(",")
    assert header[:7] == list(table_schema(study.groups["resident"].form))[:7]
    assert "basic/province" in header and "spending/pay_scenes/retail" in header
    assert (
        (tmp_path / "resident__children.csv")
        .read_text()
        .startswith("_parent_uuid,_index,children/child_age\n")
    )
    assert pl.read_parquet(tmp_path / "resident.parquet").columns == header
    manifest = json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8"))
    assert (manifest["format"], manifest["format_version"]) == (FORMAT, FORMAT_VERSION)
    assert manifest["study"] == "minimal"
    assert manifest["groups"]["resident"]["rows"] == 3
    assert manifest["groups"]["resident"]["repeats"]["children"]["rows"] == 3
    assert manifest["provenance"] == {"seed": 7, "source": "test"}


def test_csv_only_and_single_files_read_back(
    study: Study, reference: GroupResponses, tmp_path: Path
) -> None:
    write_responses(with_paradata(reference), study, tmp_path)
    one = read_responses(tmp_path / "resident.parquet", study).groups["resident"]
    assert_frame_equal(one.submissions, reference.submissions)
    assert_frame_equal(one.repeats["children"], reference.repeats["children"])
    for p in tmp_path.glob("*.parquet"):
        p.unlink()
    gr = read_responses(tmp_path, study).groups["resident"]
    assert_frame_equal(gr.submissions, reference.submissions)
    assert_frame_equal(gr.repeats["children"], reference.repeats["children"])


def test_other_dtypes_and_extra_meta_round_trip(
    study: Study, reference: GroupResponses, tmp_path: Path
) -> None:
    """What simulate hands over is written as it is: microsecond naive times, extra `_`
    columns, flags; missing fields are filled and choice columns made from the codes."""
    sub = reference.submissions.with_columns(
        pl.col("_submitted").dt.replace_time_zone(None).dt.cast_time_unit("us"),
        pl.lit("stratum-1").alias("_stratum"),
        pl.Series(FLAGS, [None, "speeder", None], dtype=pl.String),
    ).drop("age_band", "pay_scenes/none")
    gr = GroupResponses("resident", sub, dict(reference.repeats))
    write_responses(Responses("minimal", {"resident": gr}), study, tmp_path)
    for p in tmp_path.glob("*.parquet"):
        p.unlink()  # the CSV files alone carry the types back, through the manifest
    back = read_responses(tmp_path, study).groups["resident"].submissions
    assert back.schema["_submitted"] == pl.Datetime("us")
    assert back["_submitted"].equals(sub["_submitted"])
    assert back["_stratum"].to_list() == ["stratum-1"] * 3
    assert back[FLAGS].to_list() == [None, "speeder", None]
    assert back["age_band"].to_list() == [None] * 3
    assert back["pay_scenes/none"].to_list() == [0, 0, None]


def made_up(study: Study, gid: str, repeat: str | None, n: int) -> pl.DataFrame:
    """A table of `n` rows with a valid value in every column of a form's table."""
    form = study.groups[gid].form
    fields = {f.name: f for f in table_fields(form, repeat)}
    uuids = [f"uuid:{gid}-{i % 4}" for i in range(n)]
    columns: dict[str, pl.Series] = {}
    for name, dtype in table_schema(form, repeat).items():
        f = fields.get(name)
        values: list[object]
        if name in ("_uuid", "_parent_uuid"):
            values = list(uuids)
        elif "/" in name:
            continue  # choice columns: made from the codes by write_responses
        elif f is not None and f.type in ("select_one", "select_multiple"):
            codes = choice_codes(form, f)
            many = f.type == "select_multiple"
            values = [
                " ".join(codes[: 1 + i % 2]) if many else codes[i % len(codes)] for i in range(n)
            ]
        elif dtype == pl.Int64:
            values = list(range(1, n + 1))
        elif dtype == pl.Float64:
            values = [i / 3 for i in range(n)]
        elif dtype == pl.Date:
            values = [dt.date(2018, 10, 1 + i) for i in range(n)]
        elif dtype == DATETIME:
            values = [dt.datetime(2018, 10, 1, 8, i, 30, 125000, tzinfo=dt.UTC) for i in range(n)]
        else:
            values = [f'答案 {name}, "{i}"' for i in range(n)]
        columns[name] = pl.Series(name, values, dtype=dtype)
    return pl.DataFrame(columns)


def test_every_wechat_questionnaire_round_trips(wechat: Study, tmp_path: Path) -> None:
    groups = {
        gid: GroupResponses(
            gid,
            made_up(wechat, gid, None, 4),
            {r: made_up(wechat, gid, r, 6) for r in repeat_names(g.form)},
        )
        for gid, g in wechat.groups.items()
    }
    written = digest(write_responses(Responses(wechat.id, groups), wechat, tmp_path / "a"))
    back = read_responses(tmp_path / "a", wechat)
    assert list(back.groups) == list(wechat.groups)
    for p in (tmp_path / "a").glob("*.parquet"):
        p.unlink()
    from_csv = read_responses(tmp_path / "a", wechat)
    for gid, gr in back.groups.items():
        assert_frame_equal(from_csv.groups[gid].submissions, gr.submissions)
        assert gr.submissions.height == 4
        for r, frame in gr.repeats.items():
            assert_frame_equal(from_csv.groups[gid].repeats[r], frame)
            assert frame.height == 6
    assert digest(write_responses(from_csv, wechat, tmp_path / "b")) == written


def test_write_refuses_what_does_not_fit(
    study: Study, reference: GroupResponses, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="not of 'minimal'"):
        write_responses(Responses("other", {}), study, tmp_path)
    stray = GroupResponses("resident", reference.submissions.with_columns(pl.lit(1).alias("x")))
    with pytest.raises(ValueError, match="columns not in questionnaire resident: x"):
        write_responses(Responses("minimal", {"resident": stray}), study, tmp_path)


# --- bad files ----------------------------------------------------------------------------

# file, read options, then the first problem: code, file, row, column, words in the message
BAD_FILES: list[tuple[str, dict[str, str], str, str, int | None, str | None, str]] = [
    ("gbk.csv", {}, "encoding", "gbk.csv", 3, None, "it is encoded as GBK (GB18030)"),
    (
        "unknown_column.csv",
        {},
        "unknown_column",
        "unknown_column.csv",
        None,
        "basic-city",
        "questionnaire resident has no field",
    ),
    (
        "not_in_choices.csv",
        {},
        "not_in_choices",
        "not_in_choices.csv",
        4,
        "basic-province",
        '"shenzhen" is not in the choice list province (beijing, shanghai, guangdong)',
    ),
    (
        "select_multiple_code.csv",
        {},
        "not_in_choices",
        "select_multiple_code.csv",
        2,
        "spending-pay_scenes",
        '"taxi" is not in the choice list scene',
    ),
    (
        "wrong_types.csv",
        {},
        "not_integer",
        "wrong_types.csv",
        2,
        "basic-age",
        '"thirty-four" is not an integer',
    ),
    (
        "duplicate_instanceid.csv",
        {},
        "duplicate_uuid",
        "duplicate_instanceid.csv",
        4,
        "KEY",
        f"instanceID {UUIDS[0]} is already in row 2",
    ),
    (
        "missing_key.csv",
        {},
        "missing_column",
        "missing_key.csv",
        None,
        "KEY",
        "no such column: it holds the instanceID of each submission",
    ),
    (
        "kobo_unknown_label.csv",
        {"group": "resident"},
        "not_in_choices",
        "kobo_unknown_label.csv",
        2,
        "A. About you/Province where you live",
        '"Guangzhou" is not in the choice list province',
    ),
    (
        "orphan/resident.csv",
        {},
        "orphan_repeat",
        "resident-children.csv",
        4,
        "PARENT_KEY",
        f'"{UUIDS[1]}" matches no submission in resident.csv',
    ),
]


@pytest.mark.parametrize(
    ("name", "options", "code", "file", "row", "column", "words"),
    BAD_FILES,
    ids=[c[0] for c in BAD_FILES],
)
def test_bad_file_gives_its_problem(
    study: Study,
    name: str,
    options: dict[str, str],
    code: str,
    file: str,
    row: int | None,
    column: str | None,
    words: str,
) -> None:
    with pytest.raises(IngestError) as e:
        read_responses(BAD / name, study, **options)  # type: ignore[arg-type]
    p = e.value.problems[0]
    assert (p.code, p.file, p.row, p.column) == (code, file, row, column), str(p)
    assert words in p.message
    assert str(p).startswith(file)


def test_all_problems_are_listed_at_once(study: Study) -> None:
    with pytest.raises(IngestError) as e:
        read_responses(BAD / "wrong_types.csv", study)
    assert [(p.row, p.column, p.code) for p in e.value.problems] == [
        (2, "basic-age", "not_integer"),
        (3, "spending-spend_month", "not_decimal"),
        (4, "start", "not_datetime"),
    ]
    assert 'row 3, column spending-spend_month: "300,5" is not a number' in str(e.value)


def test_lenient_flags_instead_of_raising(study: Study, reference: GroupResponses) -> None:
    got = read_responses(BAD / "wrong_types.csv", study, lenient=True)
    sub = got.groups["resident"].submissions
    assert sub[FLAGS].to_list() == [
        "not_integer:age",
        "not_decimal:spend_month",
        "not_datetime:start",
    ]
    assert sub["age"].to_list() == [None, 52, 19]
    assert sub["spend_month"].to_list() == [1200.0, None, None]
    assert sub["start"][2] is None
    # every other cell as in the clean file
    same = [c for c in reference.submissions.columns if c not in ("age", "spend_month", "start")]
    assert_frame_equal(
        sub.select(same).drop("_duration_s"), reference.submissions.select(same).drop("_duration_s")
    )
    problems = got.provenance["problems"]
    assert isinstance(problems, list) and all(isinstance(p, Problem) for p in problems)
    assert [p.code for p in problems] == ["not_integer", "not_decimal", "not_datetime"]


def test_lenient_keeps_duplicates_and_drops_unknown_columns(study: Study) -> None:
    dup = read_responses(BAD / "duplicate_instanceid.csv", study, lenient=True)
    assert dup.groups["resident"].submissions[FLAGS].to_list() == [None, None, "duplicate_uuid"]
    unknown = read_responses(BAD / "unknown_column.csv", study, lenient=True)
    assert "basic-city" not in unknown.groups["resident"].submissions.columns
    assert [p.code for p in unknown.provenance["problems"]] == ["unknown_column"]  # type: ignore[attr-defined]
    bad_code = read_responses(BAD / "select_multiple_code.csv", study, lenient=True)
    row = bad_code.groups["resident"].submissions.row(0, named=True)
    assert (row["pay_scenes"], row["pay_scenes/retail"], row[FLAGS]) == (
        None,
        None,
        "not_in_choices:pay_scenes",
    )


def test_lenient_still_refuses_an_unreadable_file(study: Study) -> None:
    with pytest.raises(IngestError) as e:
        read_responses(BAD / "gbk.csv", study, lenient=True)
    assert e.value.problems[0].code == "encoding"


def test_which_questionnaire(study: Study, tmp_path: Path) -> None:
    renamed = tmp_path / "export.csv"
    shutil.copy(EXPORTS / "kobo" / "resident_labels_en.csv", renamed)
    assert list(read_responses(renamed, study).groups) == ["resident"]  # by its columns
    meta_only = tmp_path / "export2.csv"
    meta_only.write_text('"_id";"_uuid";"_submission_time"\r\n"1";"a";"2018-10-08T01:20:11"\r\n')
    with pytest.raises(IngestError, match="cannot tell which questionnaire"):
        read_responses(meta_only, study)
    with pytest.raises(IngestError, match="no group 'nope'"):
        read_responses(renamed, study, group="nope")


def test_not_an_export(study: Study, tmp_path: Path) -> None:
    other = tmp_path / "list.csv"
    other.write_text("name,phone\nWang,138\n", encoding="utf-8")
    with pytest.raises(IngestError, match="not an export read here"):
        read_responses(other, study)
    with pytest.raises(IngestError, match=r"no manifest\.json"):
        read_responses(tmp_path, study)
