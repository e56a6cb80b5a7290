import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lit_unlearn.datamodules.sources import load_records

ROWS = [{"question": "Q1?", "answer": "A1.", "perturbed_answer": ["x", "y"]},
        {"question": "Q2?", "answer": "A2.", "perturbed_answer": ["z", "w"]}]


def test_json_array_jsonl_and_tofu_style_json(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(ROWS))
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    (tmp_path / "c.json").write_text("\n".join(json.dumps(r) for r in ROWS))  # TOFU ships JSON lines as .json
    for name in ("a.json", "b.jsonl", "c.json"):
        assert load_records(str(tmp_path / name), "forget").rows == ROWS


def test_parquet_and_csv(tmp_path):
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "d.parquet")
    assert load_records(str(tmp_path / "d.parquet"), "forget").rows == ROWS
    with open(tmp_path / "e.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["question", "answer", "perturbed_answer"])
        w.writeheader()
        for r in ROWS:
            w.writerow({**r, "perturbed_answer": json.dumps(r["perturbed_answer"])})
    assert load_records(str(tmp_path / "e.csv"), "forget").rows == ROWS


def test_in_memory_and_dict_forms(tmp_path):
    assert load_records(ROWS, "retain").rows == ROWS
    (tmp_path / "a.json").write_text(json.dumps(ROWS))
    rec = load_records({"path": str(tmp_path / "a.json"), "fields": {"answer": "paraphrased_answer"}}, "x")
    assert rec.rows == ROWS and rec.meta["fields"] == {"answer": "paraphrased_answer"}


def test_missing_file_and_bad_extension(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"forget: data file '.*nope\.json' does not exist"):
        load_records(str(tmp_path / "nope.json"), "forget")
    (tmp_path / "data.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"retain: unsupported file extension '\.txt'.*expected one of \.json"):
        load_records(str(tmp_path / "data.txt"), "retain")


def test_bad_json_line_names_line(tmp_path):
    (tmp_path / "bad.jsonl").write_text(json.dumps(ROWS[0]) + "\n{oops\n")
    with pytest.raises(ValueError, match="line 2 of '.*bad.jsonl' is not valid JSON"):
        load_records(str(tmp_path / "bad.jsonl"), "forget")


def test_non_dict_rows_and_unknown_keys():
    with pytest.raises(TypeError, match="forget: row 1 of the in-memory list is a str"):
        load_records([ROWS[0], "oops"], "forget")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['pth'\]"):
        load_records({"pth": "x.json"}, "forget")


def test_hub_name_offline_fails_clearly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises((OSError, ImportError), match="locuslab/TOFU"):
        load_records("locuslab/TOFU", "forget")
