"""Every option parser, called directly, and ``parse_options`` on raw values (no pytest run).

The integration catalogue (tests/integration/test_bad_inputs.py) checks what a user sees for a
bad value; these check each parser's accepted spellings and the value it gives, quickly.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pytest_icl import catalogue
from pytest_icl import options as O
from pytest_icl.errors import OptionError, UsageError
from pytest_icl.models.loading import DEFAULT_MODEL


def _raw(**given):
    """A ``Raw`` over keyword arguments: ``icl_shots="4"`` is ``--icl-shots 4`` on the command line."""

    def raw(dest):
        if dest not in given:
            return None
        return given[dest], O.BY_DEST[dest].flag

    return raw


# ---- the parsers


@pytest.mark.parametrize(
    ("parse", "text", "value"),
    [(O.positive_int, "1", 1), (O.positive_int, " 16 ", 16), (O.positive_int, "16.0", 16), (O.count, "0", 0), (O.count, "3", 3)],
)
def test_whole_numbers(parse, text, value):
    """A TOML ``16.0`` reaches the parser as the text "16.0": 16, as ``shots: 16.0`` is in a task YAML."""
    assert parse(text) == value


@pytest.mark.parametrize(("parse", "text", "allowed"), [
    (O.positive_int, "0", "a whole number ≥ 1"), (O.positive_int, "2.5", "a whole number ≥ 1"), (O.positive_int, "x", "a whole number ≥ 1"),
    (O.positive_int, "nan", "a whole number ≥ 1"), (O.positive_int, "inf", "a whole number ≥ 1"), (O.positive_int, "True", "a whole number ≥ 1"),
    (O.count, "-1", "a whole number ≥ 0"), (O.count, "1e400", "a whole number ≥ 0"),
])  # fmt: skip
def test_whole_numbers_refuse_with_what_is_allowed(parse, text, allowed):
    with pytest.raises(ValueError, match=f"^{allowed}$"):
        parse(text)


@pytest.mark.parametrize(("name", "text", "value"), [
    ("shots", "4", 4), ("seed", "0", 0), ("seed", str(2**32 - 1), 2**32 - 1), ("lr", "1e-3", 1e-3), ("lr", "auto", "auto"),
    ("lr", "AUTO", "auto"), ("position", "prompt", "prompt"), ("limit", "12", 12),
])  # fmt: skip
def test_task_setting_options_follow_the_task_files_rule(name, text, value):
    """--icl-shots 4 means what ``shots: 4`` means in a task file (one rule: tasks.files.parse_setting)."""
    assert O.BY_DEST[f"icl_{name}"].parse(text) == value


@pytest.mark.parametrize(("name", "text"), [("shots", "0"), ("seed", "-1"), ("seed", str(2**32)), ("lr", "0"), ("lr", "nan"), ("lr", "inf"),
                                            ("position", "middle"), ("limit", "0"), ("limit", "1")])  # fmt: skip
def test_task_setting_options_refuse_what_a_task_file_refuses(name, text):
    with pytest.raises(ValueError) as error:
        O.BY_DEST[f"icl_{name}"].parse(text)
    assert "icl." not in str(error.value)  # the option's own wording, not the task file's


def test_one_of_lists_the_choices():
    assert O.one_of("model", "pair")("pair") == "pair"
    with pytest.raises(ValueError, match="^model or pair$"):
        O.one_of("model", "pair")("everywhere")
    with pytest.raises(ValueError, match="^a, b or c$"):
        O.one_of("a", "b", "c")("d")


@pytest.mark.parametrize(
    ("text", "value"), [("auto", "auto"), ("CPU", "cpu"), ("cuda", "cuda"), ("CUDA:0", "cuda:0"), (" cuda:01 ", "cuda:1")]
)
def test_device_is_placements_grammar(text, value):
    from pytest_icl.models.placement import parse_device

    assert O.device(text) == value == parse_device(text)


@pytest.mark.parametrize(
    ("text", "value"), [("float32", "float32"), ("fp32", "float32"), ("BF16", "bfloat16"), ("fp16", "float16"), ("auto", "auto")]
)
def test_dtype_is_placements_grammar(text, value):
    from pytest_icl.models.placement import parse_dtype

    assert O.dtype(text) == value == parse_dtype(text)


@pytest.mark.parametrize(
    ("parse", "text", "allowed"), [(O.device, "tpu", "auto, cpu, cuda or cuda:N"), (O.dtype, "int8", "float32, bfloat16, float16 or auto")]
)
def test_placement_errors_are_worded_as_option_errors(parse, text, allowed):
    with pytest.raises(ValueError, match=f"^{allowed}$"):
        parse(text)


def test_device_map_is_a_name_or_an_existing_file(tmp_path):
    assert O.device_map(" Auto ") == "auto" and O.device_map("balanced") == "balanced"
    mapping = tmp_path / "map.json"
    mapping.write_text('{"model.embed_tokens": 0, "lm_head": "cuda:1"}')
    assert O.device_map(str(mapping)) == str(mapping.resolve())
    with pytest.raises(ValueError, match="^auto, balanced, or the path of an existing JSON file"):
        O.device_map(str(tmp_path / "missing.json"))


@pytest.mark.parametrize(("text", "why"), [
    ("{not json", "not valid JSON"), ("[0, 1]", "non-empty JSON object"), ("{}", "non-empty JSON object"),
    ('{"lm_head": "disk"}', "cannot be finetuned"), ('{"lm_head": -1}', "each device must be"),
])  # fmt: skip
def test_a_device_map_file_is_read_at_start_with_the_loaders_rule(tmp_path, text, why):
    """The loader would refuse it after the options were accepted; the option refuses it first (exit 4)."""
    from pytest_icl.models.placement import PlacementError, read_device_map

    mapping = tmp_path / "map.json"
    mapping.write_text(text)
    with pytest.raises(ValueError) as error:
        O.device_map(str(mapping))
    message = str(error.value)
    assert message.startswith("auto, balanced, or a JSON file holding one object") and f"{mapping}: " in message and why in message
    with pytest.raises(PlacementError, match=why):
        read_device_map(mapping)


@pytest.mark.parametrize(
    ("text", "value"),
    [("on", True), ("TRUE", True), ("yes", True), ("1", True), ("off", False), ("false", False), ("no", False), ("0", False)],
)
def test_on_off(text, value):
    assert O.on_off(text) is value


def test_on_off_refuses_anything_else():
    with pytest.raises(ValueError, match="^on or off$"):
        O.on_off("maybe")


def test_controls_are_the_catalogues():
    assert O.CONTROLS == catalogue.control_names()
    assert O.controls(" shuffled, seeds ,") == ("shuffled", "seeds")
    for bad in ("untrained,bogus", "", " , "):
        with pytest.raises(ValueError, match="^a comma-separated list of untrained, shuffled, lcgd, seeds, output$"):
            O.controls(bad)


def _data(folder: Path, **files: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name.replace("_", ".")).write_text(text)
    return folder


ROWS = '{"word": "hot", "label": 0}\n{"word": "big", "label": 1}\n'


def test_data_entry(tmp_path):
    folder = _data(tmp_path / "d", train_jsonl=ROWS, test_jsonl=ROWS)
    assert O.data_entry(f" antonyms ={folder}") == ("antonyms", str(folder))
    files = f"{folder / 'train.jsonl'},{folder / 'test.jsonl'}"
    assert O.data_entry(f"antonyms={files}") == ("antonyms", files)
    for bad in ("antonyms", "=dir", "antonyms="):
        with pytest.raises(ValueError, match="^TASK=DIR or TASK=TRAIN_FILE,EVAL_FILE$"):
            O.data_entry(bad)
    with pytest.raises(ValueError, match=r"\(nowhere.jsonl does not exist\)$"):
        O.data_entry("antonyms=nowhere.jsonl")


@pytest.mark.parametrize(("files", "why"), [
    ({"test_jsonl": ROWS}, "needs a train.* file and a test.* file"),
    ({"train_jsonl": ROWS}, "needs a train.* file and a test.* file"),
    ({"train_jsonl": ROWS, "test_jsonl": ""}, "test.jsonl has no rows"),
    ({"train_jsonl": ROWS, "test_jsonl": '{"word": "hot", "label": 0}\n'}, "test.jsonl has 1 row; the scored split needs at least 2"),
    ({"train_jsonl": '{"word": "hot"}\n{"word": \n', "test_jsonl": ROWS}, "train.jsonl line 2: not valid JSON: Expecting value at column 9"),
    ({"train_csv": "word,label\nhot,0\nbig,1,2\n", "test_csv": "word,label\nhot,0\nbig,1\n"}, "train.csv line 3: 3 fields, but the header"),
])  # fmt: skip
def test_an_icl_data_folder_is_read_at_start(tmp_path, files, why):
    """A folder without train.* or test.*, or a file datasets would choke on: an OptionError (exit 4) naming the file and line."""
    folder = _data(tmp_path / "d", **files)
    with pytest.raises(OptionError) as error:
        O.parse_options(_raw(icl_data=[f"antonyms={folder}"]))
    message = str(error.value)
    assert message.startswith(f"--icl-data: antonyms={folder}: ") and why in message, message
    assert "\n" not in message


def test_threshold():
    assert O.threshold("SimAOU=0.05") == ("simaou", 0.05)
    assert O.threshold("accuracy=-1") == ("accuracy", -1.0)
    with pytest.raises(ValueError, match="^NAME=VALUE with NAME one of accuracy, rec2ftp"):
        O.threshold("accurac=0.1")
    for bad in ("high", "nan", "inf", "-inf", ""):
        with pytest.raises(ValueError, match=rf"^NAME=VALUE with a finite number as VALUE \('{bad}' is not a finite number\)$"):
            O.threshold(f"simaou={bad}")


def test_tolerance_names_the_catalogues_compared_metrics():
    compared = ", ".join(m.name for m in catalogue.compared_metrics())
    assert O.tolerance("simaou=0.05") == ("simaou", 0.05)
    assert O.tolerance(" kendall =inf") == ("kendall", math.inf)
    cases = {
        "simaou": "expected METRIC=VALUE, got 'simaou'",
        "=1": "expected METRIC=VALUE, got '=1'",
        "simou=1": "unknown metric 'simou'",
        "simam_before=0.1": "simam_before is not compared with the baseline (control of SimAM (ICL vs ZSL maps))",
        "acc_ft=x": "tolerance of acc_ft: 'x' is not a number",
        "acc_ft=-1": "tolerance of acc_ft must be ≥ 0 (inf turns the check off), got '-1'",
        "acc_ft=nan": "tolerance of acc_ft must be ≥ 0",
        "acc_ft=-inf": "tolerance of acc_ft must be ≥ 0",
    }
    for text, why in cases.items():
        with pytest.raises(ValueError) as error:
            O.tolerance(text)
        message = str(error.value)
        assert message.startswith(f"METRIC=VALUE with METRIC one of {compared} and VALUE ≥ 0 (") and why in message, message


def test_tolerance_agrees_with_the_baseline_files_rule():
    """The option and a task file's icl.tolerances take the same values (report.baseline reads the file)."""
    from pytest_icl.report.baseline import parse_tolerance

    for text in ("simaou=0.05", "kendall=inf", "acc_zsl=0"):
        assert O.tolerance(text) == parse_tolerance(text)


def test_text_value():
    assert O.text_value("x") == "x"
    with pytest.raises(ValueError, match="^a non-empty value$"):
        O.text_value("  ")


# ---- the table


def test_every_option_is_a_flag_and_an_ini_key_of_the_same_name():
    assert [o.dest for o in O.OPTIONS] == list(O.BY_DEST)
    for option in O.OPTIONS:
        assert option.flag.startswith("--icl-") and option.dest == option.flag[2:].replace("-", "_")
        assert option.kind in ("value", "list", "flag") and option.help
    assert O.BY_DEST["icl_model"].old_ini == "icl_models"


# ---- parse_options


def test_nothing_given_is_the_defaults():
    options = O.parse_options(_raw())
    assert options == O.IclOptions()
    assert options.models == (DEFAULT_MODEL,) and options.shots is None and options.lr is None
    assert (options.device, options.dtype, options.batch_size, options.seeds, options.accuracy_gate) == ("auto", "float32", 16, 3, True)


def test_every_value_is_parsed_into_its_type(tmp_path):
    _data(tmp_path / "d", train_jsonl=ROWS, test_jsonl=ROWS)
    options = O.parse_options(_raw(
        icl_model=["a/b", "c/d"], icl_task=["antonyms"], icl_shots="4", icl_seed="7", icl_lr="3e-3", icl_position="prompt",
        icl_limit="8", icl_device="CPU", icl_dtype="bf16", icl_batch_size="2", icl_gpus_per_worker="0", icl_dist="pair",
        icl_report=str(tmp_path / "out"), icl_data=[f"antonyms={tmp_path / 'd'}"], icl_threshold=["simaou=0.1"],
        icl_accuracy_gate="off", icl_controls=["shuffled,seeds", "seeds,output"], icl_seeds="5",
        icl_baseline=str(tmp_path / "b.json"), icl_baseline_model="other", icl_tolerance=["kendall=1"],
    ))  # fmt: skip
    assert options.models == ("a/b", "c/d") and options.tasks == ("antonyms",)
    assert (options.shots, options.seed, options.lr, options.position, options.limit) == (4, 7, 3e-3, "prompt", 8)
    assert (options.device, options.dtype, options.batch_size, options.gpus_per_worker, options.dist) == ("cpu", "bfloat16", 2, 0, "pair")
    assert options.report == (tmp_path / "out").resolve() and options.data == {"antonyms": str(tmp_path / "d")}
    assert options.thresholds == {"simaou": 0.1} and options.accuracy_gate is False
    assert options.controls == ("shuffled", "seeds", "output") and options.seeds == 5  # repeated names once, in order
    assert options.baseline == (tmp_path / "b.json").resolve() and options.baseline_model == "other"
    assert options.tolerances == {"kendall": 1.0}


def test_lr_auto_stays_a_word():
    assert O.parse_options(_raw(icl_lr="auto")).lr == "auto"


def test_a_bad_value_is_an_option_error_naming_where_it_came_from():
    with pytest.raises(OptionError, match=r"^--icl-shots: 'four' is not allowed; give a whole number ≥ 1$") as error:
        O.parse_options(_raw(icl_shots="four"))
    assert isinstance(error.value, UsageError)  # exit 4 at start
    ini = lambda dest: ("0", f"{dest} (ini)") if dest == "icl_shots" else None  # noqa: E731
    with pytest.raises(OptionError, match=r"^icl_shots \(ini\): '0' is not allowed"):
        O.parse_options(ini)
    with pytest.raises(OptionError, match=r"^--icl-threshold: 'x' is not allowed"):
        O.parse_options(_raw(icl_threshold=["simaou=1", "x"]))  # each entry of a list option


def test_a_flag_is_true_when_given_and_parses_a_word_from_an_ini_file(tmp_path):
    base = {"icl_baseline": str(tmp_path / "b.json")}
    assert O.parse_options(_raw(icl_baseline_update=True, **base)).baseline_update is True
    assert O.parse_options(lambda d: ("false", "ini") if d == "icl_baseline_update" else _raw(**base)(d)).baseline_update is False


@pytest.mark.parametrize(("given", "message"), [
    ({"icl_baseline_update": True}, "--icl-baseline-update needs --icl-baseline FILE"),
    ({"icl_baseline_model": "m"}, "--icl-baseline-model needs --icl-baseline FILE"),
    ({"icl_baseline_update": True, "icl_baseline_model": "m", "icl_baseline": "b.json"}, "--icl-baseline-model compares with stored rows"),
])  # fmt: skip
def test_baseline_options_that_need_each_other(given, message):
    with pytest.raises(OptionError, match=f"^{message}"):
        O.parse_options(_raw(**given))


def test_model_paths_in_an_ini_file_are_relative_to_it(tmp_path, monkeypatch):
    (tmp_path / "my-model").mkdir()
    monkeypatch.chdir(tmp_path.parent)
    ini = lambda dest: (["my-model", "smollm2-135m", "not/here"], "icl_model (ini)") if dest == "icl_model" else None  # noqa: E731
    options = O.parse_options(ini, ini_dir=tmp_path)
    assert options.models == (str(tmp_path / "my-model"), "smollm2-135m", "not/here")
    # On the command line a path means the working folder, as any path there does.
    assert O.parse_options(_raw(icl_model=["my-model"]), ini_dir=tmp_path).models == ("my-model",)


# ---- checks against the outside world


def test_report_folder_is_made_and_must_be_writable(tmp_path):
    O.check_report_folder(tmp_path / "new" / "out")
    assert (tmp_path / "new" / "out").is_dir() and not list((tmp_path / "new" / "out").iterdir())  # the probe is gone
    (tmp_path / "taken").write_text("")
    with pytest.raises(OptionError, match="is an existing file, not a folder"):
        O.check_report_folder(tmp_path / "taken")
    with pytest.raises(OptionError, match="cannot write in '/proc/pytest-icl-report'"):
        O.check_report_folder(Path("/proc/pytest-icl-report"))


def test_check_device_asks_for_a_gpu_only_when_named(monkeypatch):
    import torch

    O.check_device("auto")
    O.check_device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(OptionError, match="^--icl-device cuda:"):
        O.check_device("cuda:0")
