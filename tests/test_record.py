"""matching.record: reading and validating a canonical records CSV."""

from __future__ import annotations

import csv
import io
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import matching.record as record
import matching.record_parse as record_parse
from matching.record import (
    CANONICAL_COLUMNS,
    DEFAULT_AGENCY,
    Problem,
    RecordsFile,
    RecordsFileError,
    read_records,
)

HEADER = ",".join(CANONICAL_COLUMNS)
COL = {name: i + 1 for i, name in enumerate(CANONICAL_COLUMNS)}  # 1-based field positions


def row(**values: str) -> str:
    """One canonical CSV line with the given fields set (others empty)."""
    unknown = set(values) - set(CANONICAL_COLUMNS)
    assert not unknown, unknown
    return ",".join(values.get(name, "") for name in CANONICAL_COLUMNS)


def write(tmp_path: Path, text: str | bytes, name: str = "records.csv") -> Path:
    path = tmp_path / name
    if isinstance(text, str):
        path.write_bytes(text.encode("utf-8"))
    else:
        path.write_bytes(text)
    return path


def canonical_file(tmp_path: Path, *rows: str) -> Path:
    return write(tmp_path, "\n".join([HEADER, *rows]) + "\n")


def rejection(path: Path) -> RecordsFileError:
    with pytest.raises(RecordsFileError) as info:
        read_records(path)
    return info.value


def problem_strings(path: Path) -> list[str]:
    return [str(p) for p in rejection(path).problems]


# --------------------------------------------------------------------------- accepted files


def test_reads_every_canonical_column_in_order_with_object_dtypes_and_int_birth_year(tmp_path):
    path = canonical_file(tmp_path, row(
        record_id="R1", agency="PD", source_system="cad", given_name="Maria",
        middle_name="L", family_name="Garcia Lopez", name_suffix="JR", aliases="Mia|Mari",
        dob="1983-02-01", birth_year="1983", sex="f", phone="555-0100",
        email="m@example.org", street="1 Main St", city="Springfield", state="IL",
        postcode="02134", ssn_last4="0042", recorded_at="2024-05-01T13:45:00Z"))
    result = read_records(path)
    assert isinstance(result, RecordsFile)
    frame = result.frame
    assert list(frame.columns) == list(CANONICAL_COLUMNS)
    assert str(frame["birth_year"].dtype) == "Int64"
    assert all(frame[c].dtype == object for c in CANONICAL_COLUMNS if c != "birth_year")
    got = frame.iloc[0].to_dict()
    assert got["birth_year"] == 1983
    assert got["sex"] == "F"
    assert got["postcode"] == "02134"  # leading zero kept: values are strings
    assert got["ssn_last4"] == "0042"
    assert got["dob"] == "1983-02-01"
    assert got["aliases"] == "Mia|Mari"
    assert result.warnings == []
    assert result.impossible_dates == 0
    assert result.present_columns == list(CANONICAL_COLUMNS)


def test_only_record_id_is_required_and_absent_columns_are_all_null(tmp_path):
    path = write(tmp_path, "record_id\nA\nB\n")
    result = read_records(path)
    frame = result.frame
    assert frame["record_id"].tolist() == ["A", "B"]
    for name in CANONICAL_COLUMNS:
        if name in ("record_id", "agency"):
            continue
        assert frame[name].isna().all(), name
    assert frame["birth_year"].isna().all() and str(frame["birth_year"].dtype) == "Int64"
    assert result.present_columns == ["record_id"]


def test_missing_agency_column_becomes_the_default_agency(tmp_path):
    result = read_records(write(tmp_path, "record_id,given_name\nA,Ann\n"))
    assert result.frame["agency"].tolist() == [DEFAULT_AGENCY]
    assert DEFAULT_AGENCY == "DEFAULT"
    assert "agency" not in result.present_columns


def test_empty_agency_value_becomes_the_default_agency(tmp_path):
    result = read_records(write(tmp_path, "record_id,agency\nA,PD\nB,\nC,   \n"))
    assert result.frame["agency"].tolist() == ["PD", DEFAULT_AGENCY, DEFAULT_AGENCY]
    assert "agency" in result.present_columns


def test_agency_column_with_no_values_is_not_a_present_column(tmp_path):
    result = read_records(write(tmp_path, "record_id,agency\nA,\n"))
    assert result.frame["agency"].tolist() == [DEFAULT_AGENCY]
    assert result.present_columns == ["record_id"]


def test_unknown_columns_are_ignored_and_listed_in_a_warning(tmp_path):
    result = read_records(write(tmp_path, "record_id,shoe_size,DOB,,given_name\nA,9,x,y,Ann\n"))
    assert list(result.frame.columns) == list(CANONICAL_COLUMNS)
    assert result.frame["given_name"].tolist() == ["Ann"]
    assert result.frame["dob"].isna().all()  # "DOB" is not "dob"
    [warning] = result.warnings
    assert "ignored unknown columns" in warning
    assert "'shoe_size' (column 2)" in warning
    assert "'DOB' (column 3; did you mean 'dob'?)" in warning
    assert "unnamed column 4" in warning


def test_present_columns_are_canonical_columns_in_the_file_with_a_value(tmp_path):
    path = write(tmp_path, "family_name,record_id,phone,email,extra\nSmith,A,,,z\nJones,B, ,,z\n")
    result = read_records(path)
    assert result.present_columns == ["record_id", "family_name"]  # canonical order


def test_values_are_stripped_and_whitespace_only_values_are_null(tmp_path):
    path = write(tmp_path, 'record_id,given_name,family_name,city\n  A  , Ann ,"  ",\t\n')
    frame = read_records(path).frame
    assert frame.loc[0, "record_id"] == "A"
    assert frame.loc[0, "given_name"] == "Ann"
    assert frame.loc[0, "family_name"] is None
    assert frame.loc[0, "city"] is None


def test_alias_parts_are_stripped_and_empty_parts_dropped(tmp_path):
    path = write(tmp_path, "record_id,aliases\nA, Bob | Bobby \nB,|Jack||\nC,|\nD,Rob\n")
    frame = read_records(path).frame
    assert frame["aliases"].tolist() == ["Bob|Bobby", "Jack", None, "Rob"]


def test_sex_is_normalised_to_upper_case(tmp_path):
    frame = read_records(write(tmp_path, "record_id,sex\nA,m\nB,F\nC,x\nD,u\nE,\n")).frame
    assert frame["sex"].tolist() == ["M", "F", "X", "U", None]


def test_birth_year_accepts_range_ends_and_a_float_style_whole_number(tmp_path):
    frame = read_records(write(tmp_path, "record_id,birth_year\nA,1850\nB,2100\nC,1983.0\nD,\n")
                         ).frame
    assert frame["birth_year"].tolist()[:3] == [1850, 2100, 1983]
    assert frame["birth_year"].isna().tolist() == [False, False, False, True]


@pytest.mark.parametrize("value", [
    "2024-05-01", "2024-05-01T13:45", "2024-05-01T13:45:00", "2024-05-01T13:45:00Z",
    "2024-05-01T13:45:00.123456Z", "2024-05-01T13:45:00+05:30", "2024-05-01T13:45:00-0800",
    "2024-05-01T13:45:00+01", "2024-05-01 13:45:00", "2024-02-29T00:00:00z",
])
def test_recorded_at_accepts_iso_dates_and_datetimes_with_z_or_offsets(tmp_path, value):
    frame = read_records(write(tmp_path, f"record_id,recorded_at\nA,{value}\n")).frame
    assert frame.loc[0, "recorded_at"] == value


def test_utf8_byte_order_mark_is_ignored(tmp_path):
    path = write(tmp_path, b"\xef\xbb\xbfrecord_id,given_name\nA,Jos\xc3\xa9\n")
    frame = read_records(path).frame
    assert frame["record_id"].tolist() == ["A"]
    assert frame["given_name"].tolist() == ["José"]


def test_crlf_line_endings_are_read(tmp_path):
    frame = read_records(write(tmp_path, "record_id,given_name\r\nA,Ann\r\nB,Bo\r\n")).frame
    assert frame["given_name"].tolist() == ["Ann", "Bo"]


def test_quoted_commas_quotes_and_newlines_are_values(tmp_path):
    path = write(tmp_path, 'record_id,street,given_name\nA,"1 Main St, Apt 2","Ann ""Annie"""\n'
                           'B,"line one\nline two",Bo\n')
    frame = read_records(path).frame
    assert frame["street"].tolist() == ["1 Main St, Apt 2", "line one\nline two"]
    assert frame["given_name"].tolist() == ['Ann "Annie"', "Bo"]


def test_header_only_file_gives_no_records_and_a_warning(tmp_path):
    result = read_records(write(tmp_path, HEADER + "\n"))
    assert len(result.frame) == 0
    assert list(result.frame.columns) == list(CANONICAL_COLUMNS)
    assert str(result.frame["birth_year"].dtype) == "Int64"
    assert any("no records" in w for w in result.warnings)


def test_blank_lines_are_skipped(tmp_path):
    frame = read_records(write(tmp_path, "\nrecord_id,given_name\n\nA,Ann\n\n\nB,Bo\n")).frame
    assert frame["record_id"].tolist() == ["A", "B"]


def test_reading_writes_nothing(tmp_path):
    path = canonical_file(tmp_path, row(record_id="A"))
    before = sorted(p.name for p in tmp_path.iterdir())
    read_records(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


# --------------------------------------------------------------------------- impossible dates


def test_impossible_dob_is_nulled_counted_and_located_in_a_warning(tmp_path):
    path = canonical_file(
        tmp_path,
        row(record_id="A", dob="1983-02-30"),
        row(record_id="B", dob="2001-13-01"),
        row(record_id="C", dob="2000-02-29"),  # leap day: fine
        row(record_id="D", dob="1900-02-29"),  # 1900 was not a leap year
    )
    result = read_records(path)
    assert result.frame["dob"].tolist() == [None, None, "2000-02-29", None]
    assert result.impossible_dates == 3
    [warning] = result.warnings
    assert warning.startswith("dob: 3 impossible dates")
    assert f"{path}:2:9 '1983-02-30'" in warning
    assert f"{path}:3:9 '2001-13-01'" in warning
    assert f"{path}:5:9 '1900-02-29'" in warning
    assert "dob" in result.present_columns


def test_impossible_date_warning_names_only_the_first_few_locations(tmp_path):
    rows = [row(record_id=f"R{i}", dob="1990-04-31") for i in range(12)]
    result = read_records(canonical_file(tmp_path, *rows))
    assert result.impossible_dates == 12
    [warning] = result.warnings
    assert warning.count("'1990-04-31'") == record.EXAMPLE_LOCATIONS
    assert warning.endswith(f"... and {12 - record.EXAMPLE_LOCATIONS} more")


def test_future_dob_is_nulled_and_counted_as_impossible(tmp_path, monkeypatch):
    monkeypatch.setattr(record, "_today", lambda: date(2025, 6, 1))
    path = write(tmp_path, "record_id,dob\nA,2025-06-01\nB,2025-06-02\nC,2031-01-01\n")
    result = read_records(path)
    assert result.frame["dob"].tolist() == ["2025-06-01", None, None]
    assert result.impossible_dates == 2
    assert f"{path}:3:2 '2025-06-02'" in result.warnings[0]


def test_dob_before_1850_is_nulled_and_counted_as_impossible(tmp_path):
    result = read_records(write(tmp_path, "record_id,dob\nA,1492-10-12\nB,1850-01-01\n"))
    assert result.frame["dob"].tolist() == [None, "1850-01-01"]
    assert result.impossible_dates == 1


def test_all_dobs_impossible_leaves_dob_out_of_present_columns(tmp_path):
    result = read_records(write(tmp_path, "record_id,dob\nA,1983-02-30\n"))
    assert "dob" not in result.present_columns


# --------------------------------------------------------------------------- rejected files


def test_missing_file_is_rejected(tmp_path):
    path = tmp_path / "nope.csv"
    assert problem_strings(path) == [f"{path}: file not found"]


def test_directory_is_rejected(tmp_path):
    assert problem_strings(tmp_path) == [f"{tmp_path}: is a directory, not a CSV file"]


@pytest.mark.parametrize("content", [b"", b"\n\n", b"  \r\n\t\n"])
def test_empty_file_is_rejected(tmp_path, content):
    path = write(tmp_path, content)
    assert problem_strings(path) == [f"{path}: file is empty"]


def test_nul_byte_is_rejected_at_its_line_and_field(tmp_path):
    path = write(tmp_path, b"record_id,given_name\nA,Ann\nB,B\x00b\n")
    [problem] = rejection(path).problems
    assert (problem.line, problem.column) == (3, 2)
    assert "NUL byte" in problem.message and "binary" in problem.message
    assert str(problem).startswith(f"{path}:3:2: contains a NUL byte")


def test_non_utf8_byte_is_rejected_at_its_line_and_field(tmp_path):
    path = write(tmp_path, "record_id,given_name,city\nA,Ann,X\nB,José,Y\n".encode("latin-1"))
    [problem] = rejection(path).problems
    assert (problem.line, problem.column) == (3, 2)
    assert "byte 0xE9 is not valid UTF-8" in problem.message
    assert "(byte 6 of the line)" in problem.message


def test_utf16_file_is_rejected_with_a_hint(tmp_path):
    path = write(tmp_path, "record_id\nA\n".encode("utf-16"))
    [problem] = rejection(path).problems
    assert "UTF-16" in problem.message


def test_missing_record_id_column_is_rejected(tmp_path):
    path = write(tmp_path, "id,given_name\n1,Ann\n")
    [problem] = rejection(path).problems
    assert (problem.line, problem.column) == (1, None)
    assert str(problem).startswith(f"{path}:1: no record_id column")
    assert "'id', 'given_name'" in problem.message


def test_duplicate_column_names_are_rejected(tmp_path):
    path = write(tmp_path, "record_id,dob,given_name,dob\nA,1980-01-01,Ann,1980-01-02\n")
    assert problem_strings(path) == [f"{path}:1:4: dob: duplicate column name (also column 2)"]


def test_ragged_row_reports_expected_and_found_fields(tmp_path):
    path = write(tmp_path, "record_id,given_name,family_name\nA,Ann,Lee\nB,Bo,Li,extra\nC,Cy\n")
    assert problem_strings(path) == [
        f"{path}:3: expected 3 fields, found 4",
        f"{path}:4: expected 3 fields, found 2",
    ]


def test_ragged_canonical_row_says_expected_19_fields(tmp_path):
    path = canonical_file(tmp_path, row(record_id="A") + ",surplus")
    assert problem_strings(path) == [f"{path}:2: expected 19 fields, found 20"]


def test_empty_record_id_is_rejected(tmp_path):
    path = write(tmp_path, "given_name,record_id\nAnn,A\nBo,\nCy,  \n")
    problems = problem_strings(path)
    assert problems == [
        f"{path}:3:2: record_id: empty value; every record needs a record_id",
        f"{path}:4:2: record_id: empty value; every record needs a record_id",
    ]


def test_duplicate_record_id_names_both_lines(tmp_path):
    path = write(tmp_path, "record_id,given_name\nA,Ann\nB,Bo\nA,Another\n B ,Bob\nA,Third\n")
    assert problem_strings(path) == [
        f"{path}:4:1: record_id: duplicate record_id 'A' (first on line 2)",
        f"{path}:5:1: record_id: duplicate record_id 'B' (first on line 3)",
        f"{path}:6:1: record_id: duplicate record_id 'A' (first on line 2)",
    ]


def test_malformed_dob_is_rejected_with_path_line_column_and_message(tmp_path):
    rows = [row(record_id=f"R{i}", dob="1983-02-01") for i in range(10)]
    rows.append(row(record_id="R10", dob="1983/02/01"))
    path = canonical_file(tmp_path, *rows)
    assert problem_strings(path) == [
        f"{path}:12:9: dob: '1983/02/01' is not a date in YYYY-MM-DD form"]


@pytest.mark.parametrize("value", ["02/01/1983", "1983-2-1", "19830201", "1983-02-01T00:00",
                                   "unknown", "١٩٨٣-٠٢-٠١"])
def test_dob_not_in_yyyy_mm_dd_form_is_rejected(tmp_path, value):
    path = write(tmp_path, f"record_id,dob\nA,{value}\n")
    [problem] = rejection(path).problems
    assert (problem.line, problem.column, problem.column_name) == (2, 2, "dob")
    assert problem.message.endswith("is not a date in YYYY-MM-DD form")


@pytest.mark.parametrize("value", ["2024/05/01", "yesterday", "2024-13-01", "2024-02-30",
                                   "2024-05-01T25:00", "2024-05-01T10:60", "2024-05-01T10:00+5",
                                   "2024-05-01T", "05/01/2024 10:00"])
def test_recorded_at_not_iso_8601_is_rejected(tmp_path, value):
    path = write(tmp_path, f"record_id,recorded_at\nA,{value}\n")
    [problem] = rejection(path).problems
    assert (problem.line, problem.column, problem.column_name) == (2, 2, "recorded_at")
    assert "is not an ISO 8601 date or datetime" in problem.message


@pytest.mark.parametrize("value", ["1849", "2101", "0", "19x3", "1983.5", "-1983", "83"])
def test_birth_year_not_a_whole_year_in_range_is_rejected(tmp_path, value):
    path = write(tmp_path, f"record_id,birth_year\nA,{value}\n")
    assert problem_strings(path) == [
        f"{path}:2:2: birth_year: '{value}' is not a whole year between 1850 and 2100"]


@pytest.mark.parametrize("value", ["Male", "female", "Q", "MF", "0"])
def test_sex_other_than_m_f_x_u_is_rejected(tmp_path, value):
    path = write(tmp_path, f"record_id,sex\nA,M\nB,{value}\n")
    [problem] = rejection(path).problems
    assert str(problem) == f"{path}:3:2: sex: '{value}' is not one of M/F/X/U"


def test_every_problem_is_reported_in_file_order(tmp_path):
    path = write(tmp_path, (
        "record_id,dob,sex,birth_year,recorded_at\n"
        "A,1983/02/01,Q,1700,then\n"  # line 2: four problems
        "A,,,,\n"                     # line 3: duplicate
        ",,,,\n"                      # line 4: empty id
        "C,,\n"                       # line 5: ragged
        "D,1983-02-30,,,\n"           # line 6: impossible date: only a warning
    ))
    error = rejection(path)
    assert [(p.line, p.column, p.column_name) for p in error.problems] == [
        (2, 2, "dob"), (2, 3, "sex"), (2, 4, "birth_year"), (2, 5, "recorded_at"),
        (3, 1, "record_id"), (4, 1, "record_id"), (5, None, None),
    ]
    assert error.total_problems == 7


def test_problems_are_capped_but_all_are_counted(tmp_path):
    rows = "".join(f"R{i},bad\n" for i in range(1500))
    error = rejection(write(tmp_path, "record_id,sex\n" + rows))
    assert len(error.problems) == record.MAX_PROBLEMS
    assert error.total_problems == 1500
    assert error.problems[0].line == 2
    text = str(error)
    assert len(text.splitlines()) == record.SHOWN_PROBLEMS + 1
    assert text.splitlines()[-1] == f"... and {1500 - record.SHOWN_PROBLEMS} more"


def test_quoted_newline_reports_the_line_where_the_record_starts(tmp_path):
    path = write(tmp_path, (
        "record_id,street,dob\n"
        'A,"1 Main St\nApt 2\nBack door",1980-01-01\n'  # lines 2-4
        "B,2 Elm St,1980/01/01\n"                       # line 5
        'C,"x\r\ny",bad\n'                               # lines 6-7
        "D,,1980-02-31\n"                               # line 8
    ))
    assert problem_strings(path) == [
        f"{path}:5:3: dob: '1980/01/01' is not a date in YYYY-MM-DD form",
        f"{path}:6:3: dob: 'bad' is not a date in YYYY-MM-DD form",
    ]


def test_impossible_date_after_quoted_newlines_is_located_at_its_record_start(tmp_path):
    path = write(tmp_path, 'record_id,street,dob\nA,"a\nb\nc",1980-01-01\nB,"d\ne",1980-02-31\n')
    result = read_records(path)
    assert f"{path}:5:3 '1980-02-31'" in result.warnings[0]


def test_blank_lines_do_not_shift_reported_line_numbers(tmp_path):
    path = write(tmp_path, "\nrecord_id,sex\n\nA,M\n\n\nB,Q\n")
    assert problem_strings(path) == [f"{path}:7:2: sex: 'Q' is not one of M/F/X/U"]


def test_unterminated_quote_is_rejected(tmp_path):
    path = write(tmp_path, 'record_id,street\nA,1 Main\nB,"2 Elm\nC,3 Oak\n')
    problems = rejection(path).problems
    assert [(p.line, p.column) for p in problems] == [(3, 2)]
    assert "never closed" in problems[0].message


def test_stray_quote_inside_an_unquoted_value_is_kept(tmp_path):
    frame = read_records(write(tmp_path, 'record_id,given_name\nA,O"Neil\n')).frame
    assert frame["given_name"].tolist() == ['O"Neil']


def test_csv_module_fallback_reads_the_same_frame(tmp_path, monkeypatch):
    text = ('record_id,agency,given_name,dob,birth_year,sex,aliases\n'
            'A,PD, Ann ,1980-01-02,1980,f,Annie| Nan\n'
            'B,,"Bo\nB",1980-02-31,,,\n')
    expected = read_records(write(tmp_path, text))

    def broken(*args, **kwargs):
        raise pa.ArrowInvalid("simulated")

    monkeypatch.setattr(record_parse.pacsv, "read_csv", broken)
    fallback = read_records(write(tmp_path, text, "again.csv"))
    pd.testing.assert_frame_equal(fallback.frame, expected.frame)
    assert fallback.impossible_dates == expected.impossible_dates == 1
    assert fallback.present_columns == expected.present_columns


def test_csv_module_fallback_reports_the_same_problems(tmp_path, monkeypatch):
    text = 'record_id,sex,street\nA,Q,"x\ny"\nA,M,z\nB,M\n'
    expected = problem_strings(write(tmp_path, text))
    monkeypatch.setattr(record_parse.pacsv, "read_csv",
                        lambda *a, **k: (_ for _ in ()).throw(pa.ArrowInvalid("simulated")))
    assert problem_strings(write(tmp_path, text)) == expected
    assert len(expected) == 3


# --------------------------------------------------------------------------- Problem / error


def test_problem_string_omits_parts_that_are_missing():
    assert str(Problem("r.csv", 12, 9, "dob", "bad")) == "r.csv:12:9: dob: bad"
    assert str(Problem("r.csv", 3, None, None, "expected 19 fields, found 20")) == \
        "r.csv:3: expected 19 fields, found 20"
    assert str(Problem("r.csv", 1, 4, None, "x")) == "r.csv:1:4: x"
    assert str(Problem("r.csv", 0, None, None, "file not found")) == "r.csv: file not found"


def test_records_file_error_is_a_value_error_listing_problems_one_per_line():
    problems = [Problem("r.csv", i, 1, "record_id", "bad") for i in range(2, 5)]
    error = RecordsFileError(problems)
    assert isinstance(error, ValueError)
    assert str(error) == "\n".join(str(p) for p in problems)
    assert error.problems == problems


# --------------------------------------------------------------------------- properties

_text = st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)),
                max_size=12)
_date = st.dates(date(1850, 1, 1), date(2020, 12, 31)).map(date.isoformat)
_datetime = st.one_of(
    _date,
    st.datetimes().map(lambda d: d.isoformat(timespec="seconds")),
    st.datetimes().map(lambda d: d.isoformat() + "Z"),
    st.tuples(st.datetimes(), st.sampled_from(["+05:30", "-08:00", "+0100"]))
    .map(lambda t: t[0].isoformat(timespec="minutes") + t[1]),
)
_padding = st.sampled_from(["", " ", "  ", "\t"])


def _padded(values):
    return st.tuples(_padding, values, _padding).map(lambda t: "".join(t))


_VALUE = {
    "dob": _padded(_date) | st.just(""),
    "birth_year": _padded(st.integers(1850, 2100).map(str)) | st.just(""),
    "sex": _padded(st.sampled_from(["M", "F", "X", "U", "m", "f", "x", "u"])) | st.just(""),
    "recorded_at": _padded(_datetime) | st.just(""),
    "aliases": st.lists(_text.filter(lambda s: "|" not in s), max_size=3).map("|".join),
}


@st.composite
def well_formed_files(draw):
    extra = draw(st.lists(st.sampled_from(["note", "x_extra"]), max_size=2, unique=True))
    columns = draw(st.lists(st.sampled_from(CANONICAL_COLUMNS[1:]), unique=True, max_size=8))
    header = draw(st.permutations(["record_id", *columns, *extra]))
    n = draw(st.integers(0, 6))
    prefix = draw(_text)
    rows = []
    for i in range(n):
        values = {}
        for name in header:
            if name == "record_id":
                values[name] = draw(_padding) + f"{prefix.strip()}#{i}" + draw(_padding)
            else:
                values[name] = draw(_VALUE.get(name, _text))
        rows.append(values)
    terminator, quoting = draw(st.sampled_from([
        ("\r\n", csv.QUOTE_MINIMAL), ("\n", csv.QUOTE_ALL), ("\r\n", csv.QUOTE_ALL)]))
    return header, rows, terminator, quoting


def _expected(name: str, raw: str):
    value = raw.strip()
    if name == "aliases":
        value = "|".join(p.strip() for p in raw.split("|") if p.strip())
    if not value:
        return DEFAULT_AGENCY if name == "agency" else None
    if name == "sex":
        return value.upper()
    if name == "birth_year":
        return int(value)
    return value


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(well_formed_files())
def test_any_well_formed_file_round_trips_to_stripped_values(spec):
    header, rows, terminator, quoting = spec
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=terminator, quoting=quoting)
    writer.writerow(header)
    for values in rows:
        writer.writerow([values[name] for name in header])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "records.csv"
        path.write_bytes(buffer.getvalue().encode("utf-8"))
        result = read_records(path)
    frame = result.frame
    assert list(frame.columns) == list(CANONICAL_COLUMNS)
    assert len(frame) == len(rows)
    assert result.impossible_dates == 0
    for i, values in enumerate(rows):
        for name in CANONICAL_COLUMNS:
            got = frame[name].iloc[i]
            got = None if pd.isna(got) else got
            if name in values:
                assert got == _expected(name, values[name]), (name, values[name], got)
            else:
                assert got == (DEFAULT_AGENCY if name == "agency" else None), name
    present = [name for name in CANONICAL_COLUMNS if name in header and (
        name == "record_id" or any(_expected(name, v[name]) not in (None,) and
                                   (name != "agency" or v[name].strip()) for v in rows))]
    assert result.present_columns == present


# --------------------------------------------------------------------------- scale


@pytest.mark.slow
def test_reads_a_million_rows_quickly(tmp_path):
    n = 1_000_000
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "record_id": [f"R{i:07d}" for i in range(n)],
        "agency": rng.choice(["PD", "EMS", ""], n),
        "given_name": rng.choice(["Ann", "Bo", "José", "O'Neil"], n),
        "family_name": rng.choice(["Smith", "de la Cruz", "Nguyen"], n),
        "aliases": rng.choice(["", "Bob|Bobby"], n),
        "dob": rng.choice(["1980-01-02", "1999-12-31", ""], n),
        "birth_year": rng.choice(["1980", "1999", ""], n),
        "sex": rng.choice(["M", "f", ""], n),
        "street": rng.choice(["1 Main St", "2 Oak Ave, Apt 3"], n),
        "recorded_at": rng.choice(["2024-01-02T03:04:05Z", "2023-06-01"], n),
    })
    path = tmp_path / "big.csv"
    frame.to_csv(path, index=False)
    start = time.perf_counter()
    result = read_records(path)
    elapsed = time.perf_counter() - start
    assert len(result.frame) == n
    assert elapsed < 15, elapsed


def test_the_earliest_problems_are_kept_when_the_cap_is_reached(tmp_path):
    rows = ["A,bad"] + [f"R{i},M,surplus" for i in range(1200)]
    error = rejection(write(tmp_path, "record_id,sex\n" + "\n".join(rows) + "\n"))
    assert error.total_problems == 1201
    assert len(error.problems) == record.MAX_PROBLEMS
    assert str(error.problems[0]).endswith(":2:2: sex: 'bad' is not one of M/F/X/U")
    assert error.problems[1].message == "expected 2 fields, found 3"


def _outcome(path: Path):
    try:
        result = read_records(path)
    except RecordsFileError as error:
        return "rejected", [str(p) for p in error.problems], error.total_problems
    return "accepted", result.frame.to_dict("list"), result.warnings, result.present_columns


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(st.sampled_from(list('ab,"\n\r MQ')), max_size=60))
def test_fast_parser_and_csv_module_fallback_agree_on_messy_input(body):
    """Values come from pyarrow, line numbers from the csv module: they must see the same
    records, whatever the quoting, blank lines or line endings."""
    text = "record_id,sex\n" + body
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "records.csv"
        path.write_bytes(text.encode("utf-8"))
        fast = _outcome(path)
        original = record_parse.pacsv.read_csv

        def broken(*args, **kwargs):
            raise pa.ArrowInvalid("simulated")

        record_parse.pacsv.read_csv = broken
        try:
            fallback = _outcome(path)
        finally:
            record_parse.pacsv.read_csv = original
    assert fast == fallback


def test_binary_file_is_rejected_at_its_first_bad_byte(tmp_path):
    path = write(tmp_path, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    [problem] = rejection(path).problems
    assert (problem.line, problem.column) == (1, 1)
    assert "byte 0x89 is not valid UTF-8" in problem.message


def test_nul_before_an_undecodable_byte_is_the_one_reported(tmp_path):
    path = write(tmp_path, b"record_id\nA\x00\nB\xff\n")
    [problem] = rejection(path).problems
    assert (problem.line, problem.column) == (2, 1)
    assert "NUL byte" in problem.message
