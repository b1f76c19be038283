"""One rule per kind of value, wherever it comes from; a user's data file read before datasets reads it.

* numbers: :func:`pytest_icl.tasks.files.whole_number`, ``finite_number`` and ``tolerance_number``
  decide for a flag, an ini key (text or TOML) and a task YAML alike;
* task names: letters, digits and ``._-+()`` (they name the report's files and the test ids);
* data files: :func:`pytest_icl.tasks.data.check_rows` names the file and the line;
* the environment: :func:`pytest_icl.models.hub.environment_problem` (the rest is in test_session.py).

The integration catalogue (tests/integration/test_bad_inputs.py) shows what a user sees for each.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pytest_icl import options as O
from pytest_icl.errors import TaskDataInvalid, TaskDefinitionError, TaskSettingsError
from pytest_icl.tasks import data as D
from pytest_icl.tasks.files import (
    MAX_TASK_NAME,
    TaskSource,
    check_task_name,
    finite_number,
    parse_setting,
    tolerance_number,
    whole_number,
)

# ---- numbers


@pytest.mark.parametrize(
    ("value", "whole"),
    [(16, 16), (16.0, 16), ("16", 16), (" 16 ", 16), ("16.0", 16), ("-3", -3), ("1e3", 1000),
     (2.5, None), ("2.5", None), (True, None), ("true", None), (None, None), ([16], None),
     (math.nan, None), ("nan", None), (math.inf, None), ("inf", None), ("1e400", None), ("", None), ("x", None)],
)  # fmt: skip
def test_a_whole_number_is_the_same_from_every_source(value, whole):
    assert whole_number(value) == whole


@pytest.mark.parametrize(
    ("value", "number"),
    [(0.5, 0.5), ("3e-3", 3e-3), (" -1 ", -1.0), (2, 2.0),
     (math.nan, None), ("NaN", None), (math.inf, None), ("-inf", None), ("1e400", None), (True, None), ("x", None), (None, None)],
)  # fmt: skip
def test_a_number_is_finite(value, number):
    assert finite_number(value) == number


@pytest.mark.parametrize(
    ("value", "tolerance"),
    [(0, 0.0), ("0.05", 0.05), ("inf", math.inf), (math.inf, math.inf), (-0.1, None), ("-inf", None), (math.nan, None), ("nan", None),
     (False, None), ("x", None)],
)  # fmt: skip
def test_a_tolerance_is_a_number_at_least_zero_where_inf_switches_the_check_off(value, tolerance):
    assert tolerance_number(value) == tolerance


# Each option that overrides a task setting or shares its kind, and the task YAML setting it mirrors:
# a text the option accepts, the YAML accepts too (as text and as the number YAML or TOML would give).
SAME_RULE = [
    ("icl_shots", "shots", ["4", "4.0", "0", "-1", "2.5", "nan", "inf", "true", "four"]),
    ("icl_seed", "seed", ["0", "7", "4294967295", "4294967296", "-1", "1.5", "nan"]),
    ("icl_lr", "lr", ["1e-3", "auto", "0", "-1", "nan", "inf", "-inf", "fast"]),
]


@pytest.mark.parametrize(("dest", "setting", "texts"), SAME_RULE, ids=[s for _, s, _ in SAME_RULE])
def test_an_option_and_its_task_setting_accept_the_same_values(dest, setting, texts):
    parse = O.BY_DEST[dest].parse
    for text in texts:
        try:
            flag = parse(text)
        except ValueError:
            flag = "refused"
        try:
            yaml = parse_setting(setting, text, where="w")
        except TaskSettingsError:
            yaml = "refused"
        assert flag == yaml, (text, flag, yaml)


@pytest.mark.parametrize(
    ("text", "mapping"),
    [("simaou=0.1", {"simaou": "0.1"}), ("simaou=nan", {"simaou": math.nan}), ("simaou=inf", {"simaou": math.inf}),
     ("simaou=-inf", {"simaou": "-inf"}), ("simaou=x", {"simaou": "x"})],
)  # fmt: skip
def test_a_threshold_flag_and_a_task_files_thresholds_agree(text, mapping):
    """``--icl-threshold simaou=nan`` used to pass and turn every comparison False; ``thresholds: {simaou: .nan}`` was refused."""
    try:
        flag = O.threshold(text)[1]
    except ValueError:
        flag = "refused"
    try:
        yaml = parse_setting("thresholds", mapping, where="w")["simaou"]
    except TaskSettingsError:
        yaml = "refused"
    assert flag == yaml


@pytest.mark.parametrize(("text", "value"), [("simaou=0.1", 0.1), ("simaou=inf", math.inf), ("simaou=nan", None), ("simaou=-1", None)])
def test_a_tolerance_flag_and_a_task_files_tolerances_agree(text, value):
    """Both take inf (the check off), neither takes nan or a negative number (the YAML used to refuse inf)."""
    try:
        flag = O.tolerance(text)[1]
    except ValueError:
        flag = None
    try:
        yaml = parse_setting("tolerances", {"simaou": text.partition("=")[2]}, where="w")["simaou"]
    except TaskSettingsError:
        yaml = None
    assert flag == yaml == value


def test_the_eval_limit_needs_two_examples():
    assert O.eval_limit("2") == 2
    for text in ("1", "0", "nan", "2.5"):
        with pytest.raises(ValueError, match="^a whole number ≥ 2 "):
            O.eval_limit(text)


# ---- task names


@pytest.mark.parametrize(
    "name", ["antonyms", "sst2", "super-glue-lm-eval-v1", "arc_easy", "a.b+c", "tmmluplus_education_(profession_level)"]
)
def test_task_names_that_name_files(name):
    assert check_task_name(name, origin="t.yaml") == name


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [("../../escape", "escape"), ("a/b", "a_b"), ("my task", "my_task"), (".hidden", "hidden"), ("", "my_task"),
     ("x" * (MAX_TASK_NAME + 1), "x" * MAX_TASK_NAME), ("ta\\sk", "ta_sk"), ("naïve", "na_ve"), (7, "7")],
)  # fmt: skip
def test_task_names_that_would_escape_or_break_a_file_name_are_refused_with_one_that_would_do(name, suggestion):
    with pytest.raises(TaskDefinitionError) as error:
        check_task_name(name, origin="t.yaml")
    message = str(error.value)
    assert message.startswith(f"t.yaml: the task name {name!r} cannot be used") and message.endswith(f"e.g. task: {suggestion}")
    assert "\n" not in message


def test_a_task_file_and_an_inline_config_obey_the_name_rule(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("task: a/b\noutput_type: multiple_choice\ndoc_to_choice: [x, y]\n")
    with pytest.raises(TaskDefinitionError, match="t.yaml: the task name 'a/b' cannot be used"):
        TaskSource.from_path(path)
    with pytest.raises(TaskDefinitionError, match="an inline task config: the task name '../x' cannot be used"):
        TaskSource.inline({"task": "../x"})


# ---- data files


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


ROWS = '{"text": "a", "label": 0}\n\n{"text": "b", "label": 1.0, "extra": null}\n'


@pytest.mark.parametrize(
    ("name", "text", "rows"),
    [("d.jsonl", ROWS, 2), ("d.json", ROWS, 2), ("d.json", json.dumps([{"text": "a"}, {"text": "b"}, {"text": "c"}]), 3),
     ("d.csv", 'text,label\n"a, quoted",0\n\nb,1\n', 2), ("d.txt", "", -1)],
)  # fmt: skip
def test_sound_files_give_their_rows(tmp_path, name, text, rows):
    assert D.check_rows(_write(tmp_path / name, text)) == rows


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("d.jsonl", '{"text": "a"}\n{"text": "b",}\n', "d.jsonl line 2: not valid JSON: Expecting property name enclosed in double quotes at column 14"),
        ("d.jsonl", '{"text": "a"}\n["b"]\n', "d.jsonl line 2: a row must be a JSON object"),
        ("d.jsonl", '{"label": 0}\n{"label": "x"}\n', "d.jsonl line 2: column 'label' is text here but a number on line 1"),
        ("d.jsonl", '{"label": true}\n{"label": 1}\n', "d.jsonl line 2: column 'label' is a number here but true/false on line 1"),
        ("d.jsonl", "\n  \n", "d.jsonl has no rows"),
        ("d.jsonl", b'{"text": "\xff"}\n', "d.jsonl line 1: not UTF-8 text"),
        ("d.json", '{"text": "a"}\n{"text": \n', "d.json line 2: not valid JSON"),
        ("d.json", "[]", "d.json has no rows"),
        ("d.json", '"text"', "d.json: must hold a JSON array of row objects"),
        ("d.csv", "text,label\na,0\nb,1,2\n", "d.csv line 3: 3 fields, but the header (line 1) has 2"),
        ("d.csv", "text,label\n", "d.csv has no rows"),
        ("d.csv", "", "d.csv has no rows"),
        ("d.csv", b"text\n\xff\n", "d.csv: not UTF-8 text"),
        ("d.parquet", "not parquet", "d.parquet: not a parquet file pyarrow can read"),
    ],
)  # fmt: skip
def test_a_bad_file_names_itself_and_the_line(tmp_path, name, text, message):
    path = _write(tmp_path / name, text)
    with pytest.raises(TaskDataInvalid) as error:
        D.check_rows(path)
    assert str(error.value).startswith(str(tmp_path)) and message in str(error.value), str(error.value)
    assert "\n" not in str(error.value)


def test_parquet_rows_come_from_its_metadata(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["a", "b"], "label": [0, 1]}), tmp_path / "d.parquet")
    assert D.check_rows(tmp_path / "d.parquet") == 2
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), tmp_path / "e.parquet")
    with pytest.raises(TaskDataInvalid, match="e.parquet has no rows"):
        D.check_rows(tmp_path / "e.parquet")


def test_a_file_is_read_once_while_unchanged(tmp_path, monkeypatch):
    path = _write(tmp_path / "d.jsonl", ROWS)
    assert D.check_rows(path) == 2
    monkeypatch.setattr(D, "_json_lines", lambda *a: pytest.fail("read again"))
    assert D.check_rows(path) == 2
    _write(path, ROWS + '{"text": "c"}\n')  # changed: read again
    monkeypatch.undo()
    assert D.check_rows(path) == 3


def test_a_tasks_own_data_files_are_read_before_datasets(tmp_path):
    _write(tmp_path / "train.jsonl", ROWS)
    _write(tmp_path / "test.jsonl", '{"text": "a", "label": 0}\n{"text": "b" "label": 1}\n')
    config = D.absolute_data_files({"dataset_kwargs": {"data_files": {"train": "train.jsonl", "test": "test.jsonl"}}}, tmp_path)
    with pytest.raises(TaskDataInvalid, match=r"^t.yaml: split 'test': .*test\.jsonl line 2: not valid JSON: Expecting ',' delimiter"):
        D.check_data_files(config, origin="t.yaml", base=tmp_path)


def test_icl_data_files_need_two_eval_rows(tmp_path):
    _write(tmp_path / "train.jsonl", ROWS)
    _write(tmp_path / "test.jsonl", '{"text": "a", "label": 0}\n')
    with pytest.raises(TaskDataInvalid, match=r"test\.jsonl has 1 row; the scored split needs at least 2 eval examples"):
        D.local_data_files(str(tmp_path))
    _write(tmp_path / "test.jsonl", ROWS)
    assert D.local_data_files(str(tmp_path)) == [tmp_path / "train.jsonl", tmp_path / "test.jsonl"]


# ---- the hub's environment variables


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        ({}, None), ({"HF_HUB_OFFLINE": "1"}, None), ({"HF_DATASETS_OFFLINE": " Yes "}, None), ({"TRANSFORMERS_OFFLINE": ""}, None),
        ({"HTTPS_PROXY": "proxy:3128"}, None), ({"https_proxy": "http://user:pw@proxy:3128"}, None),
        ({"HF_ENDPOINT": "https://hf-mirror.example:8443"}, None),
        ({"HF_HUB_OFFLINE": "maybe"}, "HF_HUB_OFFLINE='maybe' is not a switch"),
        ({"TRANSFORMERS_OFFLINE": "2"}, "TRANSFORMERS_OFFLINE='2' is not a switch"),
        ({"HF_ENDPOINT": "hf-mirror.example"}, "HF_ENDPOINT='hf-mirror.example' is not a URL pytest-icl can connect to (expected http"),
        ({"HF_ENDPOINT": "https://hub:99999"}, "HF_ENDPOINT='https://hub:99999' is not a URL pytest-icl can connect to (Port out of range"),
        ({"HTTPS_PROXY": "http://proxy:port"}, "HTTPS_PROXY='http://proxy:port' is not a URL pytest-icl can connect to (Port could not"),
    ],
)  # fmt: skip
def test_hub_variables_of_the_wrong_kind(environ, problem):
    from pytest_icl.models.hub import environment_problem

    found = environment_problem(environ)
    assert (found is None) if problem is None else found.startswith(problem), found


def test_a_proxy_without_a_scheme_is_probed_where_requests_would_connect(monkeypatch):
    from pytest_icl.models import hub

    monkeypatch.setenv("HTTPS_PROXY", "proxy.example:3128")
    assert hub.probe_target() == ("proxy.example", 3128)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:port")
    assert hub.probe_target() == ("proxy.example", 80)  # no traceback for a library caller; the plugin refuses it at start
