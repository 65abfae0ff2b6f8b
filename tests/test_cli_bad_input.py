"""Bad input to `briefing link` / `train-matcher`: exit status 2, file:line:column, nothing written."""

import pytest

from api.cli.main import main

HEADER = "record_id,agency,given_name,family_name,dob,phone\n"


def _run(tmp_path, text: str | bytes, capsys, command="link"):
    path = tmp_path / "records.csv"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    out = tmp_path / "out"
    args = [command, str(path), "--out", str(out if command == "link" else tmp_path / "model.json"), "--quiet"]
    status = main(args)
    return status, capsys.readouterr().err, out


@pytest.mark.parametrize(
    "content, expected",
    [
        ("agency,given_name\nPD,Ann\n", "records.csv:1"),
        (HEADER + "r1,PD,Ann,Lee,1980-01-02,\nr1,PD,Bo,Lee,1981-01-02,\n", "records.csv:3"),
        (HEADER + "r1,PD,Ann,Lee,1980/01/02,\n", "records.csv:2:5: dob"),
        (HEADER + "r1,PD,Ann,Lee,1980-01-02,,extra\n", "records.csv:2"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "records.csv:1"),
    ],
    ids=["no_record_id_column", "duplicate_id", "malformed_date", "ragged_row", "binary_file"],
)
def test_bad_records_file_exits_2_naming_the_place_and_writes_nothing(tmp_path, capsys, content, expected):
    status, err, out = _run(tmp_path, content, capsys)
    assert status == 2
    assert expected in err
    assert "Traceback" not in err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["records.csv"]


def test_train_matcher_rejects_bad_file_without_writing_a_model(tmp_path, capsys):
    status, err, _ = _run(tmp_path, HEADER + "r1,PD,Ann,Lee,1980-13-45x,\n", capsys, command="train-matcher")
    assert status == 2 and "dob" in err
    assert not (tmp_path / "model.json").exists()


def test_missing_model_file_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "records.csv"
    path.write_text(HEADER + "r1,PD,Ann,Lee,1980-01-02,\n")
    status = main(["link", str(path), "--out", str(tmp_path / "out"), "--model", str(tmp_path / "nope.json"), "--quiet"])
    err = capsys.readouterr().err
    assert status == 2 and "nope.json" in err and not (tmp_path / "out").exists()


def test_threshold_outside_zero_one_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["link", str(tmp_path / "r.csv"), "--out", str(tmp_path / "o"), "--threshold", "1.5"])
    assert exc.value.code == 2
    assert "strictly between 0 and 1" in capsys.readouterr().err


def test_truth_with_a_given_model_is_refused_rather_than_ignored(tmp_path, capsys):
    status = main(["link", str(tmp_path / "r.csv"), "--out", str(tmp_path / "o"), "--model", "m.json", "--truth", "t.csv"])
    assert status == 2 and "cannot be combined with --model" in capsys.readouterr().err


def _unique_people(path, n):
    names = ["ANN", "BOB", "CARL", "DANA", "EVE", "FRED", "GINA", "HAL"]
    rows = [f"r{i},{names[i % 8]}{i},FAM{i},19{50 + i % 40}-0{1 + i % 9}-1{i % 9}" for i in range(n)]
    path.write_text("record_id,given_name,family_name,dob\n" + "\n".join(rows) + "\n")


def test_records_without_evident_duplicates_train_and_link_instead_of_crashing(tmp_path, capsys):
    _unique_people(tmp_path / "records.csv", 300)
    status = main(["link", str(tmp_path / "records.csv"), "--out", str(tmp_path / "out"), "--max-pairs-u", "2e4", "--quiet"])
    assert status == 0, capsys.readouterr().err
    clusters = (tmp_path / "out" / "clusters.csv").read_text().splitlines()
    assert len(clusters) == 301 and len({line.split(",")[1] for line in clusters[1:]}) == 300


def test_too_few_records_to_train_is_a_clear_error_pointing_to_a_model(tmp_path, capsys):
    _unique_people(tmp_path / "records.csv", 20)
    status = main(["link", str(tmp_path / "records.csv"), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert status == 2 and "--model" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
