"""Task files at collection time: which YAMLs are ours, their settings, names and content hash."""

import math
from pathlib import Path

import pytest

from pytest_icl.tasks.files import (
    TaskDefinitionError,
    TaskDeprecationWarning,
    TaskError,
    TaskSettings,
    TaskSettingsError,
    TaskSource,
    TaskWarning,
    find_task,
    is_task_file,
    parse_setting,
    read_task_header,
)

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "tasks").rglob("*.yaml"))

TASK = """task: tiny
dataset_path: json
dataset_kwargs: {data_files: {train: train.jsonl, test: test.jsonl}}
output_type: multiple_choice
doc_to_text: "{{text}}"
doc_to_choice: ["no", "yes"]
doc_to_target: label
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ---- which YAML files are ours


@pytest.mark.parametrize(
    "text",
    [
        "- name: install nginx\n  apt: {name: nginx}\n",  # an Ansible tasks/main.yml (a list)
        "name: play\nhosts: all\ntasks: [{debug: {msg: hi}}]\n",  # a mapping without task:
        "password: !vault |\n  $ANSIBLE_VAULT;1.1;AES256\n  6162\n",  # a custom tag
        "task: summarise\noutput_type: generate_until\n",  # an lm-eval task, but not multiple_choice
        "task: no_output_type\ndoc_to_text: x\n",  # lm-eval's default output_type is generate_until
        "group: my_group\ntask: [a, b]\n",  # an lm-eval group
        "",  # empty
    ],
)
@pytest.mark.parametrize("strict", [True, False])
def test_foreign_yaml_is_not_ours_even_in_a_task_folder(tmp_path, text, strict):
    assert not is_task_file(write(tmp_path, "tasks/main.yml", text), strict=strict)


@pytest.mark.parametrize("strict", [True, False])
def test_a_multiple_choice_task_is_ours_also_through_include(tmp_path, strict):
    assert is_task_file(write(tmp_path, "a.yaml", TASK), strict=strict)
    write(tmp_path, "_base.yaml", "output_type: multiple_choice\ndoc_to_choice: [a, b]\n")
    assert is_task_file(write(tmp_path, "b.yaml", "include: _base.yaml\ntask: b\n"), strict=strict)
    assert not is_task_file(tmp_path / "_base.yaml", strict=strict)  # include-only bases stay out
    assert not is_task_file(write(tmp_path, "notes.txt", TASK), strict=strict)


@pytest.mark.parametrize(
    "text",
    [
        "task: [unclosed\n",  # not valid YAML
        "metadata: {icl: {shots: 4}}\noutput_type: multiple_choice\n",  # settings, but no task name
        "task: t\nmetadata: {icl: {shots: 4}}\n",  # settings, but not multiple_choice
        "task: t\nicl: [4]\n",  # old key, malformed
        "task: t\ninclude: missing.yaml\nmetadata: {icl: {}}\n",  # settings, broken include
    ],
)
def test_a_malformed_file_carrying_our_settings_is_reported_only_when_strict(tmp_path, text):
    path = write(tmp_path, "t.yaml", text)
    assert is_task_file(path, strict=True)
    assert not is_task_file(path, strict=False)


def test_read_task_header_merges_the_include_chain_as_lm_eval_does(tmp_path):
    write(tmp_path, "_base.yaml", "output_type: multiple_choice\nmetadata: {version: 2, icl: {shots: 3}}\ndoc_to_text: base\n")
    path = write(tmp_path, "sub/t.yaml", "include: ../_base.yaml\ntask: t\ndoc_to_text: own\n")
    header = read_task_header(path)
    assert (header["task"], header["output_type"], header["doc_to_text"]) == ("t", "multiple_choice", "own")
    assert header["metadata"]["icl"] == {"shots": 3}
    write(tmp_path, "loop.yaml", "include: loop.yaml\ntask: x\n")
    with pytest.raises(TaskDefinitionError, match="include cycle"):
        read_task_header(tmp_path / "loop.yaml")


# ---- settings: metadata.icl, the deprecated top-level icl, and bad values


def test_settings_live_under_metadata(tmp_path):
    path = write(tmp_path, "t.yaml", TASK + "metadata: {version: 1.0, icl: {shots: 3, lr: 2.0e-3}}\n")
    source = TaskSource.from_path(path)
    assert source.settings == {"shots": 3, "lr": 2.0e-3}
    assert TaskSettings.from_mapping(source.settings, origin="x").lr == 2e-3


def test_the_top_level_icl_key_still_works_and_says_how_to_move_it(tmp_path):
    path = write(tmp_path, "t.yaml", TASK + "icl: {shots: 3}\n")
    with pytest.warns(TaskDeprecationWarning, match=r"Move it under 'metadata:'.*metadata: \{version: 1.0, icl: \{shots") as record:
        source = TaskSource.from_path(path)
    assert source.settings == {"shots": 3}
    assert issubclass(record[0].category, TaskWarning) and issubclass(record[0].category, FutureWarning)
    with pytest.warns(TaskDeprecationWarning):
        assert TaskSource.inline({"task": "i", "icl": {"shots": 2}}).settings == {"shots": 2}
    both = write(tmp_path, "both.yaml", TASK + "icl: {shots: 3}\nmetadata: {icl: {shots: 4}}\n")
    with pytest.raises(TaskSettingsError, match="keep only 'metadata: icl:'"):
        TaskSource.from_path(both)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("shots", 4, 4), ("shots", 4.0, 4), ("shots", "4", 4), ("seed", 0, 0), ("lr", 3e-3, 3e-3),
        ("lr", "3e-3", 3e-3), ("lr", "auto", "auto"), ("lr", "AUTO", "auto"), ("position", "prompt", "prompt"),
        ("limit", 1, 1), ("thresholds", {"accuracy": "0.1"}, {"accuracy": 0.1}),
    ],
)  # fmt: skip
def test_good_settings_are_normalised(name, value, expected):
    assert parse_setting(name, value, where="w") == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("shots", 0), ("shots", -2), ("shots", 2.5), ("shots", "two"), ("shots", True), ("shots", None),
        ("seed", 1.5), ("seed", -1), ("seed", 2**32), ("seed", "x"),
        ("lr", math.nan), ("lr", math.inf), ("lr", -1), ("lr", 0), ("lr", "fast"), ("lr", None),
        ("limit", 0), ("limit", -5), ("limit", 1.5),
        ("position", "middle"), ("thresholds", [0.1]), ("thresholds", {"accuracy": "high"}),
        ("expected_failures", {"simam": 3}), ("columns", "text"),
    ],
)  # fmt: skip
def test_bad_settings_name_the_value_and_the_rule(name, value):
    with pytest.raises(TaskSettingsError) as error:
        parse_setting(name, value, where="--icl-x")
    message = str(error.value)
    assert message.startswith(f"--icl-x = {value!r} is not allowed: ") and "\n" not in message


def test_a_float_shot_count_is_refused_not_truncated():
    with pytest.raises(TaskSettingsError, match=r"tasks/t.yaml: icl.shots = 2.5 is not allowed: k, the number of demonstrations"):
        TaskSettings.from_mapping({"shots": 2.5}, origin="tasks/t.yaml")


def test_unknown_setting_names_get_a_suggestion():
    with pytest.raises(TaskSettingsError, match=r"unknown icl setting\(s\) 'shotz' \(did you mean 'shots'\?\); known: shots, seed"):
        TaskSettings.from_mapping({"shotz": 2}, origin="t")
    with pytest.raises(TaskSettingsError, match="must be a mapping"):
        TaskSettings.from_mapping([2], origin="t")


# ---- finding a task by name, and its content hash


def test_find_task_by_name_under_the_roots(tmp_path):
    write(tmp_path, "a/one.yaml", TASK.replace("task: tiny", "task: one"))
    write(tmp_path, "b/two.yml", TASK.replace("task: tiny", "task: two"))
    write(tmp_path, "b/main.yml", "- ansible: list\n")
    write(tmp_path, "b/gen.yaml", "task: gen\noutput_type: generate_until\n")
    found = find_task("two", [tmp_path / "a", tmp_path / "b"])
    assert found is not None and found.path == (tmp_path / "b/two.yml").resolve() and found.name == "two"
    assert find_task("gen", [tmp_path]) is None  # not a multiple_choice task: not ours
    assert find_task("sst2", [tmp_path]) is None
    write(tmp_path, "c/again.yaml", TASK.replace("task: tiny", "task: one"))
    with pytest.raises(TaskDefinitionError, match="task 'one' is defined by 2 files"):
        find_task("one", [tmp_path])


@pytest.mark.parametrize("name", ["sst2", "sst5", "mr", "subj", "agnews", "cb"])
def test_shipped_paper_tasks_are_found_by_their_plain_names(name):
    found = find_task(name, [ROOT / "tasks"])
    assert found is not None and found.path == ROOT / "tasks" / "paper" / f"{name}.yaml"


def test_content_hash_changes_with_what_defines_the_task(tmp_path):
    inline = {"task": "same", "dataset_path": "json", "metadata": {"icl": {"shots": 2}}}
    a = TaskSource.inline(inline)
    b = TaskSource.inline({**inline, "metadata": {"icl": {"shots": 4}}})
    assert a.content_hash == TaskSource.inline(dict(inline)).content_hash
    assert a.content_hash != b.content_hash  # same name, different shots: never one memo entry
    assert TaskSource.builtin("sst2").content_hash != TaskSource.builtin("cb").content_hash
    with_function = TaskSource.inline({**inline, "process_docs": len})
    assert with_function.content_hash == TaskSource.inline({**inline, "process_docs": len}).content_hash

    base = write(tmp_path, "_base.yaml", "output_type: multiple_choice\n")
    path = write(tmp_path, "t.yaml", "include: _base.yaml\n" + TASK)
    before = TaskSource.from_path(path).content_hash
    assert TaskSource.from_path(path).content_hash == before
    base.write_text("output_type: multiple_choice\ndescription: changed\n")
    assert TaskSource.from_path(path).content_hash != before  # an edited include changes it too


def test_every_shipped_task_file_is_ours_and_well_formed():
    assert len(SHIPPED) == 10
    for path in SHIPPED:
        assert is_task_file(path, strict=False), path
        header = read_task_header(path)
        assert "icl" not in header and "icl" in header["metadata"], path  # lm-eval refuses a top-level icl
        TaskSettings.from_mapping(TaskSource.from_path(path).settings, origin=str(path))


def test_malformed_headers_are_task_errors(tmp_path):
    with pytest.raises(TaskError, match="not valid YAML"):
        read_task_header(write(tmp_path, "a.yaml", "task: [unclosed"))
    with pytest.raises(TaskError, match="missing 'task:'"):
        read_task_header(write(tmp_path, "b.yaml", "dataset_path: json\n"))
    with pytest.raises(TaskError, match="cannot read task file"):
        read_task_header(tmp_path / "missing.yaml")
    with pytest.raises(TaskDefinitionError, match="must be a dict with a 'task' name"):
        TaskSource.inline({"dataset_path": "json"})
