"""Reading a records file a stretch at a time (matching/record_pieces.py) accepts and rejects what reading it
whole does, with the same records, warnings and messages, whatever the cut points."""

from __future__ import annotations

import csv
import json
import io
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matching.record import RecordsFileError, read_records
from matching.record_pieces import read_records_in_pieces


def _whole(path: Path):
    try:
        result = read_records(path)
    except RecordsFileError as error:
        return "rejected", [str(p) for p in error.problems], error.total_problems
    return "accepted", result.frame.to_dict("list"), result.warnings, result.present_columns, result.impossible_dates


def _in_pieces(path: Path, piece_bytes: int):
    try:
        result = read_records_in_pieces(path, piece_bytes)
    except RecordsFileError as error:
        return "rejected", [str(p) for p in error.problems], error.total_problems
    frame = pd.concat(list(result.frames()), ignore_index=True)
    assert len(frame) == result.records
    return "accepted", frame.to_dict("list"), result.warnings, result.present_columns, result.impossible_dates


def _same_either_way(data: bytes, piece_bytes: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "records.csv"
        path.write_bytes(data)
        assert _in_pieces(path, piece_bytes) == _whole(path)


_TEXT = st.text(st.sampled_from(list('ab ,"\n\r|Q')), max_size=8)


@st.composite
def records_files(draw) -> bytes:
    """Files as an agency might write them: quoted values with commas, quotes and line breaks; CRLF or LF;
    blank lines; a byte-order mark; impossible dates. Half of them are also wrong somewhere: repeated or
    empty record ids, a ragged row, a malformed date or sex."""
    wrong = draw(st.booleans())
    pool = [f"R{i}" for i in range(30)] + ([""] if wrong else [])
    ids = draw(st.lists(st.sampled_from(pool), max_size=25, unique=not wrong))
    dates = ["1990-02-28", "1990-02-30", "2999-01-01", ""] + (["19900101"] if wrong else [])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=draw(st.sampled_from(["\n", "\r\n"])),
                        quoting=draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL])))
    writer.writerow(["record_id", "given_name", "dob", "sex"])
    for record_id in ids:
        row = [record_id, draw(_TEXT), draw(st.sampled_from(dates)), draw(st.sampled_from(["M", "f", ""]))]
        if wrong and draw(st.integers(0, 9)) == 0:
            row = row[:3] if draw(st.booleans()) else row[:3] + ["q"]
        writer.writerow(row)
        if draw(st.integers(0, 9)) == 0:
            buffer.write("\n")
    bom = "\ufeff" if draw(st.booleans()) else ""
    return (bom + buffer.getvalue()).encode("utf-8")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records_files(), st.integers(1, 120))
def test_any_file_reads_the_same_in_stretches_as_whole(data, piece_bytes):
    _same_either_way(data, piece_bytes)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(st.sampled_from(list('ab,"\n\r MQ')), max_size=80), st.integers(1, 30))
def test_messy_quoting_and_line_ends_read_the_same_in_stretches(body, piece_bytes):
    _same_either_way(("record_id,sex\n" + body).encode("utf-8"), piece_bytes)


def _county_like(n: int) -> bytes:
    lines = ["record_id,given_name,family_name,dob,sex"]
    lines += [f'R{i:05d},"Ann, {i}",Lee,19{50 + i % 40}-0{1 + i % 9}-1{i % 10},{"MF"[i % 2]}' for i in range(n)]
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def test_a_large_valid_file_is_checked_and_handed_on_in_bounded_stretches(tmp_path):
    path = tmp_path / "records.csv"
    path.write_bytes(_county_like(2_000))
    result = read_records_in_pieces(path, piece_bytes=4_096)
    frames = list(result.frames())
    assert result.whole is None and len(frames) == len(result.stretches) > 10
    assert max(len(frame) for frame in frames) <= 4_096 * 2 // 40
    assert pd.concat(frames, ignore_index=True).equals(read_records(path).frame)


def test_a_record_id_repeated_in_a_later_stretch_is_reported_as_reading_whole_reports_it(tmp_path):
    data = _county_like(500) + b"R00003,Bo,Lee,1970-01-01,M\r\n"
    path = tmp_path / "records.csv"
    path.write_bytes(data)
    with pytest.raises(RecordsFileError) as error:
        read_records_in_pieces(path, piece_bytes=1_000)
    assert str(error.value) == str(pytest.raises(RecordsFileError, read_records, path).value)
    assert "duplicate record_id 'R00003' (first on line 5)" in str(error.value) and ":502:1:" in str(error.value)


def test_impossible_dates_in_several_stretches_are_one_warning_with_the_first_five(tmp_path):
    rows = "".join(f"R{i},1990-02-{30 if i % 2 else 20}\n" for i in range(40))
    path = tmp_path / "records.csv"
    path.write_bytes(f"record_id,dob\n{rows}".encode())
    in_pieces = read_records_in_pieces(path, piece_bytes=64)
    assert in_pieces.whole is None and len(in_pieces.stretches) > 5
    assert in_pieces.warnings == read_records(path).warnings
    assert in_pieces.impossible_dates == 20


def test_a_bad_byte_in_a_later_stretch_is_reported_at_its_line_and_column(tmp_path):
    path = tmp_path / "records.csv"
    path.write_bytes(_county_like(300) + b"R99999,Jos\xe9,Lee,1970-01-01,M\r\n")
    with pytest.raises(RecordsFileError) as error:
        read_records_in_pieces(path, piece_bytes=500)
    [problem] = error.value.problems
    assert (problem.line, problem.column) == (302, 2)


def test_a_missing_file_is_the_same_error_as_reading_it_whole(tmp_path):
    with pytest.raises(RecordsFileError, match="file not found"):
        read_records_in_pieces(tmp_path / "absent.csv")


def test_a_file_changed_between_the_check_and_the_hand_on_is_refused(tmp_path):
    path = tmp_path / "records.csv"
    path.write_bytes(_county_like(200))
    checked = read_records_in_pieces(path, piece_bytes=2_000)
    path.write_bytes(_county_like(201))
    with pytest.raises(RecordsFileError, match="the file changed while it was being read"):
        list(checked.frames())


def test_the_reading_benchmark_repeats_a_file_with_unique_ids_and_reads_it_in_stretches(tmp_path):
    from evaluation.bench.read_pieces import main

    path = tmp_path / "records.csv"
    path.write_bytes(_county_like(300))
    out = tmp_path / "read.json"
    assert main([str(path), "--times", "1", "2", "--out", str(out)]) == 0
    one, two = json.loads(out.read_text())
    assert (one["records"], two["records"]) == (300, 600) and not two["read_whole"]
    assert two["peak_rss_gb"] >= two["peak_rss_gb_after_imports"] > 0


@pytest.mark.parametrize("piece_bytes", [1, 7, 40, 90, 1 << 25])
def test_a_stray_quote_before_a_quoted_line_break_never_cuts_inside_the_quoted_value(tmp_path, piece_bytes):
    """O"NEIL makes the quotes before every later line end odd until a quoted value opens: an even count then
    falls inside that value. Reading in stretches must not cut there (a street split in two, a record invented)."""
    rows = [b"record_id,given_name,family_name,street"] + [b"A%d,Ann,Lee,1 Main St" % i for i in range(5)]
    rows += [b'A5,Sean,O"Neil,2 High St', b'A6,Mary,Ray,"Flat 3', b'12 King St, Leeds, West Yorkshire, LS1 4AB"']
    rows += [b"A%d,Jo,Ng,4 Oak" % i for i in range(8, 12)]
    _same_either_way(b"\n".join(rows) + b"\n", piece_bytes)


def test_a_byte_order_mark_inside_the_file_is_kept_as_reading_whole_keeps_it(tmp_path):
    _same_either_way(b"record_id\r\nR0\r\n\xef\xbb\xbf\nQ\"\"\"ba", 16)
    _same_either_way(b"\n\nrecord_id\ra\n\xef\xbb\xbfR1", 16)
