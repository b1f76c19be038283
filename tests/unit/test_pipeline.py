"""The pipeline without pytest's plugin: a tiny random model, an inline task, :func:`run_pipeline`.

The model is far too small to learn anything; these tests check what is composed (the same
numbers as the stages called by hand, lr auto, controls, the samples file, the errors), never
whether a property holds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from pytest_icl import PipelineSettings, run_pipeline
from pytest_icl.errors import IclError, ModelError, TaskError
from pytest_icl.options import IclOptions, parse_options
from pytest_icl.pipeline import IclResult, analyse_task, load, task_source
from pytest_icl.tasks.loading import TaskSource
from tests.tiny_models import save_tiny_model

WORDS = ["hot", "cold", "big", "small", "fast", "slow", "wet", "dry", "old", "new", "up", "down"]


@pytest.fixture(autouse=True)
def _hermetic(offline_datasets, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTEST_ICL_CACHE", str(tmp_path / "cache"))


def write_rows(folder: Path) -> dict[str, str]:
    """Train, validation and test files of a two-choice antonym task; returns the data_files mapping."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, offset in (("train", 0), ("validation", 1), ("test", 2)):
        rows = [
            {"word": f"{WORDS[(i + offset) % 12]} {split} {i}", "choices": [WORDS[(i + 1) % 12], WORDS[(i + 5) % 12]], "label": i % 2}
            for i in range(8)
        ]
        path = folder / f"{split}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        files[split] = str(path)
    return files


def inline_config(folder: Path, name: str = "inline_antonyms", **icl) -> dict:
    return {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": write_rows(folder)},
        "output_type": "multiple_choice",
        "training_split": "train",
        "validation_split": "validation",
        "test_split": "test",
        "fewshot_split": "train",
        "doc_to_text": "Word: {{word}}\nAntonym:",
        "doc_to_target": "label",
        "doc_to_choice": "choices",
        "metadata": {"icl": {"shots": 2, **icl}},
    }


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    from pytest_icl.models.loading import load_model

    with load_model(str(save_tiny_model("gpt2", tmp_path_factory.mktemp("models") / "tiny-gpt2")), device="cpu") as loaded:
        yield loaded


@pytest.fixture
def source(tmp_path) -> TaskSource:
    return TaskSource.inline(inline_config(tmp_path / "data"))


def test_the_result_is_the_stages_called_by_hand(lm, source):
    from pytest_icl.analysis.aggregate import analyse
    from pytest_icl.engine.runs import run_settings
    from pytest_icl.tasks.loading import load_task

    # One draw without the shuffled-label control is exactly the single run of the stages.
    result = run_pipeline(lm, source, PipelineSettings(limit=4, batch_size=3, seeds=1, shuffled=False))

    task = load_task(source, limit=4)
    by_hand = analyse(run_settings(lm.model, lm.tokenizer, task, batch_size=3), seed=task.settings.seed)
    assert isinstance(result, IclResult) and result.task == task and result.model_id == "tiny-gpt2"
    assert result.values.keys() == by_hand.values.keys()
    assert all(result.values[k] == pytest.approx(v, nan_ok=True, abs=1e-6) for k, v in by_hand.values.items())
    assert result.counts == {**by_hand.counts, "draws": 1} and result.margins["accuracy"] == 0.05
    assert result.row["draws"] == 1 and result.row["shuffled_control"] is False
    row = result.row
    assert (row["task"], row["model_id"], row["shots"], row["eval"], row["lr"], row["lr_source"]) == (
        "inline_antonyms",
        "tiny-gpt2",
        2,
        4,
        0.01,
        "fixed",
    )
    assert {"zsl", "icl", "ft_train", "ft_eval", "metrics", "load_model"} <= set(row["timings"])
    assert "controls" not in row and result.controls is None
    accuracy = result.check("accuracy")
    assert accuracy.estimate == pytest.approx(result.values["acc_icl"] - result.values["acc_zsl"])
    assert accuracy.outcome in ("passed", "failed", "undecided") and accuracy.margin == 0.05
    assert result.analysis.values == result.values
    with pytest.raises(KeyError, match="add seeds to --icl-controls"):
        result.check_control("seeds")


def test_the_settings_override_the_tasks_own(lm, source):
    result = run_pipeline(lm, source, PipelineSettings(shots=3, seed=5, lr=0.5, position="prompt", limit=2, thresholds={"simaou": 0.25}))
    s = result.task.settings
    assert (s.shots, s.seed, s.lr, s.position, len(result.task.eval_examples)) == (3, 5, 0.5, "prompt", 2)
    assert result.margins["simaou"] == 0.25 and result.counts["shots"] == 3


def test_lr_auto_is_chosen_on_the_validation_split(lm, source):
    from pytest_icl.engine.tune import DEFAULT_LRS

    result = run_pipeline(lm, source, PipelineSettings(lr="auto", limit=2))
    assert result.task.settings.lr in DEFAULT_LRS and result.row["lr"] == result.task.settings.lr
    assert result.row["lr_source"] == "validation" and result.row["lr_reason"].startswith("inline_antonyms: lr ")
    assert run_pipeline(lm, source, PipelineSettings(lr="auto", limit=2)).row["lr_source"] == "cache"


def test_controls_and_the_samples_file(lm, source, tmp_path, monkeypatch):
    from pytest_icl.engine import runs

    trained_on_shuffled = []
    real_run_settings = runs.run_settings

    def counting(*args, **kwargs):
        trained_on_shuffled.append(kwargs.get("ft_task") is not None)
        return real_run_settings(*args, **kwargs)

    monkeypatch.setattr(runs, "run_settings", counting)
    settings = PipelineSettings(limit=3, controls=("shuffled", "seeds", "output"), seeds=2, report=tmp_path / "out")
    (tmp_path / "out").mkdir()
    result = run_pipeline(lm, source, settings)
    assert trained_on_shuffled.count(True) == 2  # one shuffled-label FT per draw: the shuffled item reads them, trains none
    assert set(result.row["controls"]) == {"shuffled", "seeds", "output"}
    assert result.row["controls"]["seeds"]["seeds"] == [1, 2]  # the task's seed, then one more: reloaded through the pipeline
    for name in ("shuffled", "seeds", "output"):
        verdict = result.check_control(name)
        assert verdict.name == name and verdict.outcome in ("passed", "failed", "undecided", "inconclusive")
        assert result.row["controls"][name]["verdict"] == verdict.as_dict()
    # the shuffled item read the draws' shuffled-label FT: its numbers are the analysis's, not a second training
    shuffled = result.row["controls"]["shuffled"]["values"]["shuffled"]
    assert shuffled["simaou"] == result.values["simaou_shuffled"]
    samples = (tmp_path / "out" / "samples_tiny-gpt2_inline_antonyms.jsonl").read_text().splitlines()
    assert len(samples) == 3


def test_a_task_loaded_elsewhere_runs_from_analyse_task(lm, source):
    """gpu_check's path: a task built without lm-eval; without its source there is one draw, and the seeds item says so."""
    task = load(source, PipelineSettings(limit=2))
    assert analyse_task(lm, task).row["eval"] == 2
    result = analyse_task(lm, task, PipelineSettings(controls=("seeds",), seeds=2))
    assert result.row["draws"] == 1
    seeds = result.check_control("seeds")
    assert seeds.outcome == "inconclusive" and "--icl-seeds 2" in seeds.message


def test_errors_are_icl_errors_that_say_what_to_do(lm, tmp_path, monkeypatch):
    bad = TaskSource.inline(inline_config(tmp_path / "a", thresholds={"simaoo": 0.1}))
    with pytest.raises(TaskError, match=r"^task 'inline_antonyms': unknown threshold name\(s\) \['simaoo'\]"):
        run_pipeline(lm, bad)
    greedy = TaskSource.inline(inline_config(tmp_path / "b", name="greedy"))
    with pytest.raises(IclError, match="12 shots asked, but the few-shot split has only 8 examples"):
        run_pipeline(lm, greedy, PipelineSettings(shots=12))

    from pytest_icl.engine import runs

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes")

    monkeypatch.setattr(runs, "run_settings", out_of_memory)
    with pytest.raises(ModelError, match=r"^out of memory on cpu: DefaultCPUAllocator.*--icl-batch-size 8 \(smaller than 16"):
        run_pipeline(lm, TaskSource.inline(inline_config(tmp_path / "c")), PipelineSettings(limit=2))


# ---- settings


def test_settings_are_the_options_of_the_same_names(tmp_path):
    data = tmp_path / "data"  # a local data folder is checked at start: it needs a train and an eval file
    data.mkdir()
    for split in ("train", "test"):
        (data / f"{split}.jsonl").write_text('{"x": "a", "y": 0}\n{"x": "b", "y": 1}\n')
    options = parse_options(
        lambda dest: {"icl_shots": ("4", "--icl-shots"), "icl_lr": ("auto", "--icl-lr"), "icl_controls": (["seeds"], "--icl-controls"),
                      "icl_data": ([f"a={data}"], "--icl-data"), "icl_report": (str(tmp_path), "--icl-report")}.get(dest)
    )  # fmt: skip
    settings = PipelineSettings.from_options(options)
    assert {f.name for f in fields(PipelineSettings)} <= {f.name for f in fields(IclOptions)}
    assert (settings.shots, settings.lr, settings.controls, settings.report) == (4, "auto", ("seeds",), tmp_path.resolve())
    assert PipelineSettings.from_options(IclOptions()) == PipelineSettings()
    # Each task gets only its own --icl-data entry, so the memo key of one task ignores another's files.
    assert settings.task_overrides("a")["data"] == str(data) and settings.task_overrides("b")["data"] is None
    assert settings.analysis_key("a") != settings.analysis_key("b")
    assert settings.analysis_key("b") == PipelineSettings(shots=4, lr="auto").analysis_key("b")


def test_task_source_reads_what_a_test_or_a_command_names(tmp_path):
    config = inline_config(tmp_path / "data")
    assert task_source(config, roots=[]).config["task"] == "inline_antonyms"
    folder = tmp_path / "tasks" / "named"
    folder.mkdir(parents=True)
    (folder / "named.yaml").write_text("task: named\noutput_type: multiple_choice\ndoc_to_choice: [a, b]\n")
    assert task_source("tasks/named/named.yaml", roots=[], base=tmp_path).path == folder / "named.yaml"
    assert task_source(folder / "named.yaml", roots=[]).path == folder / "named.yaml"
    assert task_source("named", roots=[tmp_path / "tasks"]).path == folder / "named.yaml"  # a task file wins
    assert task_source("hellaswag", roots=[tmp_path / "tasks"]) == TaskSource.builtin("hellaswag")


def test_the_pipeline_needs_no_pytest():
    code = (
        "import sys; import pytest_icl.pipeline, pytest_icl.__main__; "
        "print(sorted(m for m in sys.modules if m == 'pytest' or m.startswith(('_pytest', 'pytest_icl.plugin'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120).stdout
    assert out.strip() == "[]"


def test_by_default_a_pair_is_three_draws_with_one_zsl_and_the_shuffled_label_control(lm, source):
    from pytest_icl.analysis.verdicts import OUTCOMES

    result = run_pipeline(lm, source, PipelineSettings(limit=4, batch_size=3))
    row = result.row
    assert row["draws"] == 3 and row["seeds"] == [result.task.settings.seed + j for j in range(3)]
    assert len(result.draws) == 3 and all(d.zsl is result.draws[0].zsl for d in result.draws)  # ZSL scored once
    assert row["shuffled_control"] is True and "simaou_shuffled" in result.values
    assert set(row["verdicts"]) == {"accuracy", "rec2ftp", "simaou", "simam", "kendall"}
    assert all(v["outcome"] in OUTCOMES for v in row["verdicts"].values())
    assert len(row["verdicts"]["simaou"]["comparisons"]) == 2  # its random control and the shuffled-label FT
    assert set(row["gates"]) == {"icl_effect", "ft_learned", "rec2ftp_support", "noise_layers"}
    assert all(len(v) == 3 for v in row["per_draw"].values())
