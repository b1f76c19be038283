"""Every bad input the plugin handles, in one catalogue: exit code, one clear paragraph, nothing lost.

Each case builds a small project (a good task ``antonyms`` and maybe a bad one), runs pytest on
it and checks:

* the exit code (4 = usage error at start, 2 = collection error, 1 = failing items, 5 = nothing
  of ours collected);
* the first line of the message (a glob), and that the output has no traceback and no
  exception chain;
* nothing already written is lost: a usage error leaves an existing ``results.json`` as it was,
  and when one pair fails at run time the good pair's row is still written;
* a pair's run-time error is shown once: its first item has the paragraph, the others a
  one-line pointer to it (``once``).

A reader sees here, in one place, what each mistake looks like to a user.
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from tests.integration.icl_project import antonym_rows, write_jsonl

USAGE, COLLECTION, FAILED, NO_TESTS = 4, 2, 1, 5


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    exit: int
    message: str  # glob of the message's first line (stderr for usage errors, else stdout)
    setup: Callable | None = None  # project -> None: writes the bad thing
    ini: str = ""
    env: dict[str, str] = field(default_factory=dict)
    report: bool = True  # False: the run gets no --icl-report
    once: str = ""  # a phrase deep in a pair's paragraph: shown once, the pair's other items point to it


def _file(name: str, text: str = "x") -> Callable:
    def setup(project):
        (project.path / name).parent.mkdir(parents=True, exist_ok=True)
        (project.path / name).write_text(text)

    return setup


def _yaml(text: str, folder: str = "tasks/broken/broken.yaml") -> Callable:
    return _file(folder, text)


def _task(name: str, *, rows=None, icl=None, drop: tuple[str, ...] = (), **overrides) -> Callable:
    def setup(project):
        path = project.task(name, rows=rows, icl=icl, **overrides)
        if drop:
            import yaml

            config = yaml.safe_load(path.read_text())
            for key in drop:
                config.pop(key, None)
            path.write_text(yaml.safe_dump(config, sort_keys=False))

    return setup


def _other_setup(project):
    """The report folder holds a store made with other settings (another --icl-shots)."""
    from pytest_icl.report.rows import library_versions
    from pytest_icl.report.store import Store

    Store.open(project.path / "earlier", versions=library_versions(), settings={"shots": 99}, record=False)


def _missing_data(project):
    path = project.task("nodata")
    (path.parent / "train.jsonl").unlink()


def _bloom(project):
    """A tiny Bloom: transformers loads it, pytest-icl has no capture for its fused attention."""
    from transformers import BloomConfig, BloomForCausalLM

    from tests.tiny_models import make_tokenizer

    tokenizer = make_tokenizer()
    model = BloomForCausalLM(BloomConfig(vocab_size=len(tokenizer), hidden_size=16, n_layer=2, n_head=2))
    model.save_pretrained(project.path / "tiny-bloom")
    tokenizer.save_pretrained(project.path / "tiny-bloom")


def _ansible_only(project):
    """A foreign project: its tasks/ folder holds Ansible playbooks, not lm-eval tasks."""
    import shutil

    shutil.rmtree(project.path / "tasks")
    _file("tasks/main.yml", "- name: install nginx\n  apt: {name: nginx}\n")(project)
    _file("tasks/vars.yml", "task: not-an-lm-eval-task\nhosts: all\n")(project)


def _toml(text: str) -> Callable:
    """The project's settings in pyproject.toml's native [tool.pytest] table (pytest ≥ 9.2 keeps TOML's types)."""

    def setup(project):
        (project.path / "tox.ini").unlink()  # the inner project's ini would win over pyproject.toml
        (project.path / "pyproject.toml").write_text(f"[tool.pytest]\n{text}\n")

    return setup


def _data_dir(train: str | None, test: str | None, folder: str = "local") -> Callable:
    """An --icl-data folder: train.jsonl and test.jsonl with the given text (None: no such file)."""

    def setup(project):
        (project.path / folder).mkdir(parents=True, exist_ok=True)
        for name, text in (("train.jsonl", train), ("test.jsonl", test)):
            if text is not None:
                (project.path / folder / name).write_text(text)

    return setup


def _task_file(name: str, split: str, text: str) -> Callable:
    """Task ``name`` (the antonym rows) whose own ``split``.jsonl holds ``text`` instead."""

    def setup(project):
        path = project.task(name)
        (path.parent / f"{split}.jsonl").write_text(text)

    return setup


_GOOD = "".join(json.dumps(row) + "\n" for row in antonym_rows()[:4])
_BAD_LINE = _GOOD.replace('"label": 1}\n', '"label": }\n', 1)
_ONE_CHOICE = [{**row, "choices": [row["choices"][row["label"]]], "label": 0} for row in antonym_rows()]

_TWINS = [{**row, "choices": [row["choices"][0]] * 2} for row in antonym_rows()]
_EMPTY = [{**row, "choices": ["", row["choices"][1]]} for row in antonym_rows()]
_LONG = [{**row, "word": " ".join([row["word"]] * 40)} for row in antonym_rows()]

CASES = [
    # ---- options: a usage error at start, naming the option, the value and what is allowed
    Case("device-unknown", ("--icl-device", "tpu"), USAGE, "ERROR: --icl-device: 'tpu' is not allowed; give auto, cpu, cuda or cuda:N"),
    Case("device-cuda-absent", ("--icl-device", "cuda"), USAGE, "ERROR: --icl-device cuda: *; use --icl-device cpu*"),
    Case("device-cuda-7-absent", ("--icl-device", "cuda:7"), USAGE, "ERROR: --icl-device cuda:7: *"),
    Case(
        "device-map-missing-file",
        ("--icl-device-map", "nomap.json"),
        USAGE,
        "ERROR: --icl-device-map: 'nomap.json' is not allowed; give auto, balanced, or the path*",
    ),
    Case(
        "device-map-bad-json",
        ("--icl-device-map", "map.json"),
        USAGE,
        "ERROR: --icl-device-map: 'map.json' is not allowed; give auto, balanced, or a JSON file holding one object*map.json: not valid JSON*",
        setup=_file("map.json", "{not json"),
    ),
    Case(
        "device-map-not-a-mapping",
        ("--icl-device-map", "map.json"),
        USAGE,
        "ERROR: --icl-device-map: 'map.json' is not allowed;*must hold a non-empty JSON object mapping module names to devices, got list*",
        setup=_file("map.json", '["lm_head"]'),
    ),
    Case("dtype", ("--icl-dtype", "int8"), USAGE, "ERROR: --icl-dtype: 'int8' is not allowed; give float32, bfloat16, float16 or auto"),
    Case("position", ("--icl-position", "middle"), USAGE, "ERROR: --icl-position: 'middle' is not allowed; give label or prompt"),
    Case("shots-word", ("--icl-shots", "four"), USAGE, "ERROR: --icl-shots: 'four' is not allowed; give a whole number ≥ 1"),
    Case("shots-zero", ("--icl-shots", "0"), USAGE, "ERROR: --icl-shots: '0' is not allowed; give a whole number ≥ 1"),
    Case("shots-negative", ("--icl-shots", "-2"), USAGE, "ERROR: --icl-shots: '-2' is not allowed*"),
    Case("shots-float", ("--icl-shots", "2.5"), USAGE, "ERROR: --icl-shots: '2.5' is not allowed*"),
    Case("seed-word", ("--icl-seed", "x"), USAGE, "ERROR: --icl-seed: 'x' is not allowed; give a whole number from 0 to 2**32 - 1"),
    Case("seed-negative", ("--icl-seed", "-1"), USAGE, "ERROR: --icl-seed: '-1' is not allowed; give a whole number from 0 to 2**32 - 1"),
    Case("limit-zero", ("--icl-limit", "0"), USAGE, "ERROR: --icl-limit: '0' is not allowed; give a whole number ≥ 2*"),
    Case(
        "limit-one", ("--icl-limit", "1"), USAGE, "ERROR: --icl-limit: '1' is not allowed; give a whole number ≥ 2 (a verdict's interval*"
    ),
    Case("lr-word", ("--icl-lr", "fast"), USAGE, "ERROR: --icl-lr: 'fast' is not allowed; give a finite number > 0*'auto'*"),
    Case("lr-nan", ("--icl-lr", "nan"), USAGE, "ERROR: --icl-lr: 'nan' is not allowed*"),
    Case("lr-inf", ("--icl-lr", "inf"), USAGE, "ERROR: --icl-lr: 'inf' is not allowed*"),
    Case("lr-negative", ("--icl-lr", "-1"), USAGE, "ERROR: --icl-lr: '-1' is not allowed*"),
    Case("batch-size-zero", ("--icl-batch-size", "0"), USAGE, "ERROR: --icl-batch-size: '0' is not allowed; give a whole number ≥ 1"),
    Case("batch-size-negative", ("--icl-batch-size", "-1"), USAGE, "ERROR: --icl-batch-size: '-1' is not allowed*"),
    Case(
        "gpus-per-worker-negative",
        ("--icl-gpus-per-worker", "-1"),
        USAGE,
        "ERROR: --icl-gpus-per-worker: '-1' is not allowed; give a whole number ≥ 0*",
    ),
    Case("dist-mode", ("--icl-dist", "everywhere"), USAGE, "ERROR: --icl-dist: 'everywhere' is not allowed; give model or pair"),
    Case(
        "controls-unknown",
        ("--icl-controls", "untrained,bogus"),
        USAGE,
        "ERROR: --icl-controls: 'untrained,bogus' is not allowed; give a comma-separated list of*",
    ),
    Case("accuracy-gate", ("--icl-accuracy-gate", "maybe"), USAGE, "ERROR: --icl-accuracy-gate: 'maybe' is not allowed; give on or off"),
    Case("shuffled-control", ("--icl-shuffled", "sometimes"), USAGE, "ERROR: --icl-shuffled: 'sometimes' is not allowed; give on or off"),
    Case("seeds-zero", ("--icl-seeds", "0"), USAGE, "ERROR: --icl-seeds: '0' is not allowed; give a whole number ≥ 1"),
    Case("preset-unknown", ("--icl-preset", "nature"), USAGE, "ERROR: --icl-preset: 'nature' is not allowed; give paper"),
    Case(
        "threshold-name",
        ("--icl-threshold", "accurac=0.1"),
        USAGE,
        "ERROR: --icl-threshold: 'accurac=0.1' is not allowed; give NAME=VALUE with NAME one of accuracy, rec2ftp*",
    ),
    Case(
        "threshold-value",
        ("--icl-threshold", "simaou=high"),
        USAGE,
        "ERROR: --icl-threshold: 'simaou=high' is not allowed*not a finite number*",
    ),
    # ---- numbers are finite numbers, by one rule, from a flag, an ini key or a task YAML
    Case(
        "threshold-nan",
        ("--icl-threshold", "simaou=nan"),
        USAGE,
        "ERROR: --icl-threshold: 'simaou=nan' is not allowed*('nan' is not a finite number)",
    ),
    Case("threshold-inf", ("--icl-threshold", "accuracy=-inf"), USAGE, "ERROR: --icl-threshold: 'accuracy=-inf' is not allowed*finite*"),
    Case("tolerance-nan", ("--icl-tolerance", "simaou=nan"), USAGE, "ERROR: --icl-tolerance: 'simaou=nan' is not allowed*must be ≥ 0*"),
    Case("batch-size-inf", ("--icl-batch-size", "inf"), USAGE, "ERROR: --icl-batch-size: 'inf' is not allowed; give a whole number ≥ 1"),
    Case("seeds-float", ("--icl-seeds", "2.5"), USAGE, "ERROR: --icl-seeds: '2.5' is not allowed; give a whole number ≥ 1"),
    Case("ini-lr-inf", (), USAGE, "ERROR: icl_lr (ini): 'inf' is not allowed; give a finite number > 0*", ini="icl_lr = inf"),
    Case("ini-threshold-nan", (), USAGE, "ERROR: icl_threshold (ini): 'kendall=nan' is not allowed*", ini="icl_threshold = kendall=nan"),
    Case("ini-seeds-word", (), USAGE, "ERROR: icl_seeds (ini): 'true' is not allowed; give a whole number ≥ 1", ini="icl_seeds = true"),
    Case(
        "task-lr-inf",
        (),
        COLLECTION,
        "*inflr.yaml: icl.lr = inf is not allowed: the FT learning rate must be a finite number*",
        setup=_task("inflr", icl={"lr": float("inf")}),
    ),
    Case(
        "task-threshold-nan",
        (),
        COLLECTION,
        "*nanmargin.yaml: icl.thresholds = {'simaou': nan} is not allowed*finite number*",
        setup=_task("nanmargin", icl={"thresholds": {"simaou": float("nan")}}),
    ),
    Case(
        "task-tolerance-nan",
        (),
        COLLECTION,
        "*nantol.yaml: icl.tolerances = {'simaou': nan} is not allowed*",
        setup=_task("nantol", icl={"tolerances": {"simaou": float("nan")}}),
    ),
    Case(
        "task-tolerance-name",
        (),
        COLLECTION,
        "*tolname.yaml: tolerances names metrics not compared with the baseline [[]'simou'[]]; compared: *",
        setup=_task("tolname", icl={"tolerances": {"simou": 0.1}}),
    ),
    Case("task-seed-bool", (), COLLECTION, "*boolseed.yaml: icl.seed = True is not allowed*", setup=_task("boolseed", icl={"seed": True})),
    Case("tolerance", ("--icl-tolerance", "simaou"), USAGE, "ERROR: --icl-tolerance: 'simaou' is not allowed*"),
    Case(
        "data-no-equals",
        ("--icl-data", "antonyms"),
        USAGE,
        "ERROR: --icl-data: 'antonyms' is not allowed; give TASK=DIR or TASK=TRAIN_FILE,EVAL_FILE",
    ),
    Case("toml-shots-zero", (), USAGE, "ERROR: icl_shots (ini): '0' is not allowed; give a whole number ≥ 1", setup=_toml("icl_shots = 0")),
    Case(
        "toml-flag-word",
        (),
        USAGE,
        "ERROR: icl_rerun (ini): 'perhaps' is not allowed; give on or off",
        setup=_toml("icl_rerun = 'perhaps'"),
    ),
    Case(
        "dist-and-icl-dist",
        ("-n", "2", "--dist", "load", "--icl-dist", "pair"),
        USAGE,
        "ERROR: --dist load and --icl-dist were both given*give one of them*",
    ),
    Case(
        "task-unknown-name",
        ("--icl-task", "antonym"),
        USAGE,
        "ERROR: --icl-task: no task named 'antonym' (did you mean antonyms*",
    ),
    Case(
        "data-unknown-task",
        ("--icl-data", "antonym=local"),
        USAGE,
        "ERROR: --icl-data antonym=local: no task of this run is named 'antonym', so the files would never be read; did you mean 'antonyms'?*",
        setup=_data_dir(_GOOD, _GOOD),
    ),
    Case(
        "data-folder-without-train",
        ("--icl-data", "antonyms=local"),
        USAGE,
        "ERROR: --icl-data: antonyms=local: folder local needs a train.* file and a test.* file*",
        setup=_data_dir(None, _GOOD),
    ),
    Case(
        "data-folder-without-eval",
        ("--icl-data", "antonyms=local"),
        USAGE,
        "ERROR: --icl-data: antonyms=local: folder local needs a train.* file and a test.* file*",
        setup=_data_dir(_GOOD, None),
    ),
    Case(
        "data-bad-json-line",
        ("--icl-data", "antonyms=local"),
        USAGE,
        "ERROR: --icl-data: antonyms=local: */local/train.jsonl line 2: not valid JSON: Expecting value at column *",
        setup=_data_dir(_BAD_LINE, _GOOD),
    ),
    Case(
        "data-empty-test",
        ("--icl-data", "antonyms=local"),
        USAGE,
        "ERROR: --icl-data: antonyms=local: */local/test.jsonl has no rows*",
        setup=_data_dir(_GOOD, ""),
    ),
    Case(
        "data-one-eval-row",
        ("--icl-data", "antonyms=local"),
        USAGE,
        "ERROR: --icl-data: antonyms=local: */test.jsonl has 1 row; the scored split needs at least 2 eval examples",
        setup=_data_dir(_GOOD, _GOOD.splitlines(keepends=True)[0]),
    ),
    Case(
        "data-mixed-formats",
        ("--icl-data", "antonyms=local/train.jsonl,local/test.csv"),
        USAGE,
        "ERROR: --icl-data: antonyms=local/train.jsonl,local/test.csv: --icl-data files must both be .jsonl, .json, .csv or .parquet*",
        setup=lambda project: (_data_dir(_GOOD, None)(project), _file("local/test.csv", "word,label\nhot,0\nbig,1\n")(project)),
    ),
    Case(
        "data-missing-path",
        ("--icl-data", "antonyms=nowhere/train.jsonl,nowhere/test.jsonl"),
        USAGE,
        "ERROR: --icl-data: * (nowhere/train.jsonl does not exist)",
    ),
    Case("ini-shots-zero", (), USAGE, "ERROR: icl_shots (ini): '0' is not allowed; give a whole number ≥ 1", ini="icl_shots = 0"),
    Case(
        "report-is-a-file",
        ("--icl-report", "taken"),
        USAGE,
        "ERROR: --icl-report: '*taken' is an existing file, not a folder*",
        setup=_file("taken"),
    ),
    Case(
        "report-unwritable",
        ("--icl-report", "/proc/pytest-icl-report"),
        USAGE,
        "ERROR: --icl-report: cannot write in '/proc/pytest-icl-report'*; give a writable folder",
    ),
    Case(
        "report-other-setup",
        (),
        USAGE,
        "ERROR: report folder *earlier holds results made with another setup (setting *",
        setup=_other_setup,
    ),
    Case(
        "shard-index-out-of-range", ("--icl-shard", "2/2"), USAGE, "ERROR: --icl-shard: shard index 2 is outside 0…1; shards count from 0*"
    ),
    Case(
        "shard-not-a-number",
        ("--icl-shard", "one/2"),
        USAGE,
        "ERROR: --icl-shard: the shard index must be a whole number, got 'one'; write the shard as I/N*",
    ),
    Case("shard-zero-shards", ("--icl-shard", "0/0"), USAGE, "ERROR: --icl-shard: the number of shards must be at least 1, got 0"),
    Case(
        "shard-count-without-index",
        ("--icl-shard", "4"),
        USAGE,
        "ERROR: --icl-shard 4: a count alone takes the shard index from JOB_COMPLETION_INDEX or SLURM_ARRAY_TASK_ID*",
    ),
    Case(
        "shard-slurm-off-grid",
        (),
        USAGE,
        "ERROR: SLURM_ARRAY_TASK_ID=3 is not on the array's grid (min 0, step 2)*",
        env={"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "2", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_STEP": "2"},
    ),
    Case(
        "rerun-without-report",
        ("--icl-rerun",),
        USAGE,
        "ERROR: --icl-rerun recomputes pairs that an --icl-report folder already holds*add --icl-report DIR*",
        report=False,
    ),
    # ---- the environment: every variable pytest-icl reads, checked at start before any model loads
    Case(
        "env-cache-is-a-file",
        (),
        USAGE,
        "ERROR: PYTEST_ICL_CACHE='/dev/null': it is a file, not a folder*",
        env={"PYTEST_ICL_CACHE": "/dev/null"},
    ),
    Case(
        "env-offline-word",
        (),
        USAGE,
        "ERROR: HF_HUB_OFFLINE='maybe' is not a switch: set it to 1 (offline) or 0*",
        env={"HF_HUB_OFFLINE": "maybe"},
    ),
    Case(
        "env-endpoint-port",
        (),
        USAGE,
        "ERROR: HF_ENDPOINT='https://hub:port' is not a URL pytest-icl can connect to*",
        env={"HF_ENDPOINT": "https://hub:port"},
    ),
    Case("baseline-update-alone", ("--icl-baseline-update",), USAGE, "ERROR: --icl-baseline-update needs --icl-baseline FILE"),
    Case("baseline-missing", ("--icl-baseline", "nothere.json"), USAGE, "ERROR: *nothere.json*"),
    Case("baseline-corrupt", ("--icl-baseline", "base.json"), USAGE, "ERROR: *base.json*", setup=_file("base.json", "{not json")),
    # ---- models
    Case("model-unknown", ("--icl-model=not a model!",), USAGE, "ERROR: unknown model 'not a model!'. Give one of:"),
    Case("model-missing-folder", ("--icl-model=./missing-folder",), USAGE, "ERROR: no such file/folder: './missing-folder'*"),
    Case(
        "model-not-gguf",
        ("--icl-model=./weights.txt",),
        USAGE,
        "ERROR: './weights.txt' is a file but not a .gguf file*",
        setup=_file("weights.txt"),
    ),
    Case(
        "model-offline-hub",
        ("--icl-model=no-org/no-model", "-k", "accuracy"),
        FAILED,
        "*hub model 'no-org/no-model' is not in the local Hugging Face cache*",
    ),
    Case(
        "model-unsupported-architecture",
        ("--icl-model=./tiny-bloom", "-k", "accuracy"),
        FAILED,
        "pytest-icl does not know where 'bloom' keeps its attention keys and values. Supported: gemma3*",
        setup=_bloom,
    ),
    # ---- task files: collection errors name the file
    Case("task-invalid-yaml", (), COLLECTION, "*broken.yaml is not valid YAML*", setup=_yaml("task: broken\ndoc_to_text: [unclosed\n")),
    Case(
        "task-settings-not-a-mapping",
        (),
        COLLECTION,
        "*broken.yaml*must be a mapping*",
        setup=_yaml("task: broken\noutput_type: multiple_choice\nicl: 16\n"),
    ),
    Case("task-unknown-setting", (), COLLECTION, "*typo.yaml*shot*", setup=_task("typo", icl={"shot": 8})),
    Case("task-shots-float", (), COLLECTION, "*floaty.yaml*shots*", setup=_task("floaty", icl={"shots": 2.5})),
    Case("task-lr-negative", (), COLLECTION, "*neglr.yaml*lr*", setup=_task("neglr", icl={"lr": -1})),
    Case(
        "task-unknown-expected-failure",
        (),
        COLLECTION,
        "*xf.yaml: expected_failures names unknown properties [[]'simaoo'[]]; known: accuracy*",
        setup=_task("xf", icl={"expected_failures": {"simaoo": "typo"}}),
    ),
    Case(
        "task-name-path",
        (),
        COLLECTION,
        "*broken.yaml: the task name '../../escape' cannot be used: it names the test ids and the report's files*",
        setup=_yaml("task: ../../escape\noutput_type: multiple_choice\ndoc_to_choice: [a, b]\n"),
    ),
    Case(
        "task-name-spaces",
        (),
        COLLECTION,
        "*broken.yaml: the task name 'my task' cannot be used*e.g. task: my_task",
        setup=_yaml("task: my task\noutput_type: multiple_choice\ndoc_to_choice: [a, b]\n"),
    ),
    Case(
        "task-name-twice",
        (),
        COLLECTION,
        "*task 'antonyms' is defined by two files, */antonyms.yaml and */copy/antonyms/antonyms.yaml*",
        setup=_task("antonyms", folder="tasks/copy"),
    ),
    Case(
        "task-fixed-one-choice",
        (),
        COLLECTION,
        "*broken.yaml: doc_to_choice: [[]'positive'[]] has 1 choice; * a task needs at least 2",
        setup=_yaml("task: broken\noutput_type: multiple_choice\ndoc_to_choice: [positive]\n"),
    ),
    # ---- tasks that load but cannot run: the pair fails with one paragraph, the good pair's row is kept
    Case("task-no-doc-to-choice", ("-k", "accuracy"), FAILED, "*nochoice*doc_to_choice*", setup=_task("nochoice", drop=("doc_to_choice",))),
    Case("task-data-file-missing", ("-k", "accuracy"), FAILED, "*train.jsonl*", setup=_missing_data),
    Case(
        "task-data-missing-named",
        ("-k", "accuracy", "--icl-task", "nodata", "--icl-task", "antonyms"),
        FAILED,
        "*train.jsonl*",
        setup=_missing_data,
    ),
    Case(
        "task-identical-choices",
        ("-k", "accuracy"),
        FAILED,
        "*twins: choices [[]'*', '*'] tokenise to the same ids*",
        setup=_task("twins", rows=_TWINS),
    ),
    Case(
        "task-empty-choice",
        ("-k", "accuracy"),
        FAILED,
        "*empty.yaml: lm-eval could not build this task: IndexError: *empty answer choice*non-empty strings",
        setup=_task("empty", rows=_EMPTY),
    ),
    Case(
        "task-prompt-too-long",
        ("-k", "accuracy"),
        FAILED,
        "*verbose: the 4-shot prompt needs * tokens, but the model takes at most 256*",
        setup=_task("verbose", rows=_LONG),
    ),
    Case(
        "task-more-shots-than-examples",
        ("-k", "accuracy"),
        FAILED,
        "*greedy.yaml: 12 shots asked, but the few-shot split has only 8 examples*",
        setup=_task("greedy", icl={"shots": 12}),
    ),
    Case(
        "task-one-choice",
        ("-k", "accuracy"),
        FAILED,
        "*single.yaml: doc_to_choice gave 1 choice [[]'cold'[]] for the prompt*at least 2*",
        setup=_task("single", rows=_ONE_CHOICE),
    ),
    Case(
        "task-one-eval-example",
        ("-k", "accuracy"),
        FAILED,
        "*lonely.yaml: the eval split has 1 example(s), and a verdict needs at least 2*",
        setup=_task_file("lonely", "test", _GOOD[: _GOOD.index("\n") + 1]),
    ),
    Case(
        "task-data-bad-json",
        ("-k", "accuracy"),
        FAILED,
        "*badrows.yaml: split 'train': */train.jsonl line 2: not valid JSON: Expecting value at column *",
        setup=_task_file("badrows", "train", _BAD_LINE),
    ),
    Case(
        "task-data-empty-train",
        ("-k", "accuracy"),
        FAILED,
        "*emptytrain.yaml: split 'train': */train.jsonl has no rows*",
        setup=_task_file("emptytrain", "train", ""),
    ),
    Case(
        "task-data-column-types",
        ("-k", "accuracy"),
        FAILED,
        "*mixed.yaml: split 'test': */test.jsonl line 2: column 'label' is text here but a number on line 1; datasets needs one type per column",
        setup=_task_file("mixed", "test", _GOOD.replace('"label": 1', '"label": "one"', 1)),
    ),
    Case(
        "task-error-shown-once",
        (),
        FAILED,
        "*nochoice*doc_to_choice*",
        setup=_task("nochoice", drop=("doc_to_choice",)),
        once="the name of a column holding each row's choices",
    ),
    # ---- not ours: left alone
    Case("foreign-ansible-tasks", (), NO_TESTS, "*no tests ran*", setup=_ansible_only),
]

RUNTIME = {case.id for case in CASES if case.exit == FAILED and case.id.startswith("task-")}


def _record(case: Case, result) -> None:
    """With PYTEST_ICL_CATALOGUE=FILE, append "case | exit | first line of the message" (for the docs)."""
    target = os.environ.get("PYTEST_ICL_CATALOGUE")
    if not target:
        return
    lines = result.stderr.lines if case.exit == USAGE else result.stdout.lines
    first = next((line for line in lines if fnmatch.fnmatch(line, case.message)), "")
    with open(target, "a", encoding="utf-8") as handle:
        handle.write(f"| {case.id} | {result.ret} | {first.strip()[:160]} |\n")


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(project, case: Case, monkeypatch):
    project.task()  # the good task, beside whatever the case breaks
    if case.setup is not None:
        case.setup(project)
    if case.ini:
        project.pytester.makeini(f"[pytest]\n{case.ini}\n")
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    previous = project.path / "earlier" / "results.json"
    write_jsonl(previous.parent / "placeholder.jsonl", [])
    previous.write_text('{"schema": 1, "rows": []}\n')
    report = project.path / "earlier" if case.exit == USAGE else project.path / "out"
    given = any(a.startswith("--icl-report") for a in case.args) or not case.report
    report_args = () if given else ("--icl-report", str(report))

    result = project.run(*case.args, *report_args)

    output = result.stdout.str() + result.stderr.str()
    assert result.ret == case.exit, output[-3000:]
    (result.stderr if case.exit == USAGE else result.stdout).fnmatch_lines([case.message])
    _record(case, result)
    assert "Traceback" not in output and "During handling of the above exception" not in output
    if case.exit == USAGE:
        assert len([line for line in result.stderr.lines if line.strip()]) <= 8  # one paragraph
        assert previous.read_text() == '{"schema": 1, "rows": []}\n'  # nothing already written lost
    if case.once:  # the pair's paragraph once (its first item), a one-line pointer on each of the other four
        # pytest's own short summary repeats each item's first line (in full on a CI machine), so
        # the count covers what the run printed before it.
        before_summary = output.partition("short test summary info")[0]
        assert before_summary.count(case.once) == 1, output[-6000:]
        assert output.count("not analysed (") >= 4 and output.count(": not analysed (") == output.count(", shown in full at "), output[
            -6000:
        ]
    if case.id in RUNTIME:
        rows = json.loads((report / "results.json").read_text())["rows"]
        assert "antonyms" in {row["task"] for row in rows}  # the good pair's result is kept


def test_catalogue_has_at_least_forty_cases():
    assert len(CASES) >= 40
    assert len({case.id for case in CASES}) == len(CASES)
