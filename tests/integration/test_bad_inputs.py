"""Every bad input the plugin handles, in one catalogue: exit code, one clear paragraph, nothing lost.

Each case builds a small project (a good task ``antonyms`` and maybe a bad one), runs pytest on
it and checks:

* the exit code (4 = usage error at start, 2 = collection error, 1 = failing items, 5 = nothing
  of ours collected);
* the first line of the message (a glob), and that the output has no traceback and no
  exception chain;
* nothing already written is lost: a usage error leaves an existing ``results.json`` as it was,
  and when one pair fails at run time the good pair's row is still written.

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
    Case("dtype", ("--icl-dtype", "int8"), USAGE, "ERROR: --icl-dtype: 'int8' is not allowed; give float32, bfloat16, float16 or auto"),
    Case("position", ("--icl-position", "middle"), USAGE, "ERROR: --icl-position: 'middle' is not allowed; give label or prompt"),
    Case("shots-word", ("--icl-shots", "four"), USAGE, "ERROR: --icl-shots: 'four' is not allowed; give a whole number ≥ 1"),
    Case("shots-zero", ("--icl-shots", "0"), USAGE, "ERROR: --icl-shots: '0' is not allowed; give a whole number ≥ 1"),
    Case("shots-negative", ("--icl-shots", "-2"), USAGE, "ERROR: --icl-shots: '-2' is not allowed*"),
    Case("shots-float", ("--icl-shots", "2.5"), USAGE, "ERROR: --icl-shots: '2.5' is not allowed*"),
    Case("seed-word", ("--icl-seed", "x"), USAGE, "ERROR: --icl-seed: 'x' is not allowed; give a whole number from 0 to 2**32 - 1"),
    Case("seed-negative", ("--icl-seed", "-1"), USAGE, "ERROR: --icl-seed: '-1' is not allowed; give a whole number from 0 to 2**32 - 1"),
    Case("limit-zero", ("--icl-limit", "0"), USAGE, "ERROR: --icl-limit: '0' is not allowed; give a whole number ≥ 1"),
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
        "threshold-value", ("--icl-threshold", "simaou=high"), USAGE, "ERROR: --icl-threshold: 'simaou=high' is not allowed*not a number*"
    ),
    Case("tolerance", ("--icl-tolerance", "simaou"), USAGE, "ERROR: --icl-tolerance: 'simaou' is not allowed*"),
    Case(
        "data-no-equals",
        ("--icl-data", "antonyms"),
        USAGE,
        "ERROR: --icl-data: 'antonyms' is not allowed; give TASK=DIR or TASK=TRAIN_FILE,EVAL_FILE",
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
    if case.id in RUNTIME:
        rows = json.loads((report / "results.json").read_text())["rows"]
        assert "antonyms" in {row["task"] for row in rows}  # the good pair's result is kept


def test_catalogue_has_at_least_forty_cases():
    assert len(CASES) >= 40
    assert len({case.id for case in CASES}) == len(CASES)
