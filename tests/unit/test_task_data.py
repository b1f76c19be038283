"""Where a task's data comes from: files relative to the YAML, --icl-data folders and file pairs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_icl.errors import TaskDataMissing, TaskError, TaskSettingsError
from pytest_icl.tasks.data import absolute_data_files, check_data_files, load_yaml_relative_files, local_data_config


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


ROWS = [{"text": f"t{i}", "label": i % 2} for i in range(4)]


def test_relative_data_files_are_read_from_the_yaml_folder(tmp_path):
    config = {"dataset_kwargs": {"data_files": {"train": "train.jsonl", "test": ["a.jsonl", "hf://x/y.jsonl"]}, "other": "kept.jsonl"}}
    out = absolute_data_files(config, tmp_path)
    assert out["dataset_kwargs"]["data_files"] == {
        "train": str(tmp_path / "train.jsonl"),
        "test": [str(tmp_path / "a.jsonl"), "hf://x/y.jsonl"],
    }
    assert out["dataset_kwargs"]["other"] == "kept.jsonl"  # only data_files and data_dir are paths
    assert config["dataset_kwargs"]["data_files"]["train"] == "train.jsonl"  # the input is not changed
    assert absolute_data_files({"dataset_path": "glue"}, tmp_path) == {"dataset_path": "glue"}


def test_a_missing_named_file_is_a_broken_task_naming_file_and_split(tmp_path):
    _jsonl(tmp_path / "train.jsonl", ROWS)
    config = absolute_data_files({"dataset_kwargs": {"data_files": {"train": "train.jsonl", "test": "tset.jsonl"}}}, tmp_path)
    with pytest.raises(TaskDataMissing, match=r"tset\.jsonl .*split 'test'.*does not exist.*task YAML's folder") as caught:
        check_data_files(config, origin="my.yaml", base=tmp_path)
    assert str(caught.value).startswith("my.yaml: ")
    assert isinstance(caught.value, TaskError)


def test_globs_and_urls_are_not_reported_missing(tmp_path):
    _jsonl(tmp_path / "part-0.jsonl", ROWS)
    config = {"dataset_kwargs": {"data_files": {"train": str(tmp_path / "part-*.jsonl"), "test": "https://example.org/t.jsonl"}}}
    check_data_files(config, origin="t.yaml", base=None)


def test_a_missing_data_dir_is_reported(tmp_path):
    with pytest.raises(TaskDataMissing, match="data folder .*nowhere"):
        check_data_files({"dataset_kwargs": {"data_dir": str(tmp_path / "nowhere")}}, origin="t.yaml", base=None)


def test_a_folder_gives_train_and_test_and_drops_the_hub_keys(tmp_path):
    _jsonl(tmp_path / "train.jsonl", ROWS)
    _jsonl(tmp_path / "test.jsonl", ROWS)
    config = {"dataset_path": "glue", "dataset_name": "sst2", "validation_split": "validation", "test_split": "validation"}
    out = local_data_config(config, str(tmp_path))
    assert out["dataset_path"] == "json"
    assert out["dataset_kwargs"]["data_files"] == {"train": str(tmp_path / "train.jsonl"), "test": str(tmp_path / "test.jsonl")}
    assert (out["training_split"], out["fewshot_split"], out["test_split"]) == ("train", "train", "test")
    assert "dataset_name" not in out and "validation_split" not in out


def test_a_folder_with_train_validation_and_test_gives_all_three_splits(tmp_path):
    for split in ("train", "validation", "test"):
        _jsonl(tmp_path / f"{split}.jsonl", ROWS)
    config = {"dataset_path": "nyu-mll/glue", "dataset_name": "sst2", "test_split": "validation", "fewshot_config": {"sampler": "first_n"}}
    out = local_data_config(config, str(tmp_path))
    assert out["dataset_kwargs"]["data_files"] == {s: str(tmp_path / f"{s}.jsonl") for s in ("train", "validation", "test")}
    assert (out["training_split"], out["fewshot_split"], out["validation_split"], out["test_split"]) == (
        "train",
        "train",
        "validation",
        "test",
    )
    assert out["fewshot_config"] == {"sampler": "first_n"}  # the demonstration draw is the task's, on the local pool
    files = ",".join(str(tmp_path / f"{s}.jsonl") for s in ("train", "validation", "test"))
    assert local_data_config(config, files) == out  # TASK=TRAIN,VALIDATION,TEST names the same three


def test_a_folder_with_train_and_validation_only_scores_the_validation_file(tmp_path):
    _jsonl(tmp_path / "train.jsonl", ROWS)
    _jsonl(tmp_path / "validation.jsonl", ROWS)
    out = local_data_config({"validation_split": "validation"}, str(tmp_path))
    assert out["dataset_kwargs"]["data_files"] == {"train": str(tmp_path / "train.jsonl"), "test": str(tmp_path / "validation.jsonl")}
    assert "validation_split" not in out  # no split left to choose the lr on apart from the scored one


def test_a_folder_with_two_files_for_one_split_is_refused(tmp_path):
    _jsonl(tmp_path / "train.jsonl", ROWS)
    _jsonl(tmp_path / "test.jsonl", ROWS)
    (tmp_path / "test.csv").write_text("text,label\na,0\n")
    with pytest.raises(TaskSettingsError, match="2 test files"):
        local_data_config({}, str(tmp_path))


def test_a_folder_without_train_says_what_it_needs(tmp_path):
    _jsonl(tmp_path / "test.jsonl", ROWS)
    with pytest.raises(TaskDataMissing, match=r"needs a train\.\* file"):
        local_data_config({}, str(tmp_path))


def test_a_file_pair_must_share_one_format(tmp_path):
    train = _jsonl(tmp_path / "train.jsonl", ROWS)
    (tmp_path / "test.csv").write_text("text,label\na,0\n")
    with pytest.raises(TaskSettingsError, match=r"must both be .*got \['train.jsonl', 'test.csv'\]"):
        local_data_config({}, f"{train},{tmp_path / 'test.csv'}")
    with pytest.raises(TaskDataMissing, match="no such file"):
        local_data_config({}, f"{train},{tmp_path / 'absent.jsonl'}")
    with pytest.raises(TaskSettingsError, match="TASK=DIR, TASK=TRAIN_FILE,EVAL_FILE or TASK=TRAIN,VALIDATION,TEST"):
        local_data_config({}, f"{train},{train},{train},{train}")
    with pytest.raises(TaskSettingsError, match=r"must all be .*got \['train.jsonl', 'train.jsonl', 'test.csv'\]"):
        local_data_config({}, f"{train},{train},{tmp_path / 'test.csv'}")


def test_load_yaml_relative_files_reads_beside_the_yaml(tmp_path):
    pytest.importorskip("datasets")
    _jsonl(tmp_path / "data" / "train.jsonl", ROWS)
    dataset = load_yaml_relative_files(data_files={"train": "data/train.jsonl"}, config_source=str(tmp_path / "task.yaml"), version=1)
    assert dataset["train"]["text"] == ["t0", "t1", "t2", "t3"]
    with pytest.raises(ValueError, match="must all be"):
        load_yaml_relative_files(data_files={"train": "a.jsonl", "test": "b.csv"}, config_source=str(tmp_path / "task.yaml"))


def test_the_old_yaml_function_path_still_resolves():
    from pytest_icl import task_data

    assert task_data.load_yaml_relative_files is load_yaml_relative_files
