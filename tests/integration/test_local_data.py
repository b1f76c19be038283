"""``--icl-data TASK=TRAIN,EVAL`` (or ``TASK=DIR``) runs a task on local jsonl/csv files instead of its dataset."""

from __future__ import annotations

import csv
import json

import pytest

from tests.integration.icl_project import PAIRS, write_jsonl


def rows(pairs):
    """Columns that fit jsonl and csv alike: the choices are two plain string columns."""
    return [{"word": w, "a": a, "b": w, "label": 0} if i % 2 else {"word": w, "a": w, "b": a, "label": 1} for i, (w, a) in enumerate(pairs)]


def write_csv(path, table):
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    return path


@pytest.fixture
def hub_tasks(project):
    """Tasks whose own dataset is on the hub (so unavailable offline): only --icl-data can run them."""
    for name in ("fromjsonl", "fromcsv", "fromdir"):
        project.task(name, dataset_path="no-such-org/antonyms", dataset_kwargs=None, doc_to_choice="{{[a, b]}}")
    data = project.path / "data"
    write_jsonl(data / "train.jsonl", rows(PAIRS[:8]))
    write_jsonl(data / "test.jsonl", rows(PAIRS[8:13]))  # 5 eval rows, fewer than --icl-limit 6
    data.joinpath("csv").mkdir()
    write_csv(data / "csv" / "train.csv", rows(PAIRS[:8]))
    write_csv(data / "csv" / "test.csv", rows(PAIRS[8:11]))  # 3 eval rows
    write_jsonl(data / "folder" / "train.jsonl", rows(PAIRS[:8]))
    write_jsonl(data / "folder" / "validation.jsonl", rows(PAIRS[8:12]))  # 4 eval rows
    return project


def test_tasks_run_on_local_jsonl_csv_and_folder(hub_tasks):
    result = hub_tasks.run(
        "--icl-data", "fromjsonl=data/train.jsonl,data/test.jsonl",
        "--icl-data", "fromcsv=data/csv/train.csv,data/csv/test.csv",
        "--icl-data", "fromdir=data/folder",
        "--icl-threshold", "accuracy=-1", "-k", "accuracy", "--icl-report", "out",
    )  # fmt: skip

    result.assert_outcomes(passed=3, deselected=12)
    report = json.loads((hub_tasks.path / "out" / "results.json").read_text())
    assert {row["task"]: row["eval"] for row in report["rows"]} == {"fromjsonl": 5, "fromcsv": 3, "fromdir": 4}
    assert all(row["shots"] == 4 for row in report["rows"])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            "fromjsonl=data/train.jsonl,data/csv/test.csv",
            "ERROR: --icl-data: fromjsonl=data/train.jsonl,data/csv/test.csv: --icl-data files must both be .jsonl, .json, .csv or "
            ".parquet, got ['train.jsonl', 'test.csv']",
        ),
        ("fromdir=data/csv", "ERROR: --icl-data: fromdir=data/csv: folder data/csv needs a train.* file and a test.* file*"),
    ],
    ids=["mixed-formats", "folder-without-jsonl-pair"],  # more in test_bad_inputs.py
)
def test_bad_local_data_is_a_usage_error_at_start(hub_tasks, data, message):
    """The files are found and read when the options are: exit 4 before any model loads, not an error per item."""
    (hub_tasks.path / "data" / "csv" / "train.csv").unlink()
    result = hub_tasks.run("--icl-data", data, "-k", "fromjsonl and accuracy")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message.replace("[", "[[]")])


def test_lr_auto_on_a_paper_task_is_chosen_on_the_local_validation_file(project):
    """``pytest tasks/paper --icl-task sst2 --icl-data sst2=DIR --icl-lr auto`` with DIR/train, validation and test."""
    import shutil
    from pathlib import Path

    shutil.copytree(Path(__file__).resolve().parents[2] / "tasks" / "paper", project.path / "tasks" / "paper")
    rows = [{"sentence": f"{word} film number {i}", "label": i % 2} for i, word in enumerate(["a dull", "a fine"] * 10)]
    data = project.path / "sst2-local"
    write_jsonl(data / "train.jsonl", rows[:8])
    write_jsonl(data / "validation.jsonl", rows[8:13])  # 5 rows: the lr is chosen here
    write_jsonl(data / "test.jsonl", rows[13:20])  # 7 rows, of which --icl-limit 6 are scored

    result = project.run(
        "tasks/paper", "--icl-task", "sst2", "--icl-data", f"sst2={data}", "--icl-lr", "auto", "--icl-shots", "2",
        "--icl-threshold", "accuracy=-1", "-k", "accuracy", "--icl-report", "out",
    )  # fmt: skip

    outcomes = result.parseoutcomes()  # the other paper tasks are deselected by --icl-task, the other properties by -k
    assert outcomes.get("passed") == 1 and not {"failed", "errors", "error"} & set(outcomes), outcomes
    [row] = json.loads((project.path / "out" / "results.json").read_text())["rows"]
    assert (row["task"], row["eval"], row["shots"], row["lr_source"]) == ("sst2", 6, 2, "validation")
    assert "chosen on 5 validation examples" in row["lr_reason"], row["lr_reason"]
