"""Choosing the FT learning rate on the validation split (``python -m pytest_icl tune``)."""

import subprocess
import sys
from pathlib import Path

import pytest

from pytest_icl.__main__ import main as command
from pytest_icl.engine.tune import DEFAULT_LRS, LrSweep, LrTrial, sweep_lr
from pytest_icl.tasks.loading import TaskError, TaskSource, load_task
from tests.tiny_models import make_tiny_model, save_tiny_model


def main(argv: list[str]) -> int:
    return command(["tune", *argv])


TASK = """task: tiny_tune
dataset_path: json
dataset_kwargs: {data_files: {train: train.jsonl, validation: validation.jsonl, test: test.jsonl}}
output_type: multiple_choice
training_split: train
validation_split: validation
test_split: test
fewshot_split: train
doc_to_text: "Review: {{text}} Sentiment:"
doc_to_target: label
doc_to_choice: ["negative", "positive"]
target_delimiter: " "
fewshot_delimiter: "\\n\\n"
metadata: {icl: {shots: 4}}
"""


pytestmark = pytest.mark.usefixtures("offline_datasets")


def write_tune_task(folder: Path, text: str = TASK) -> Path:
    """A two-class task with 6 rows per split (words tell the splits apart); returns the YAML path."""
    folder.mkdir()
    for split, words in (("train", "a good film"), ("validation", "the dull plot"), ("test", "one warm story")):
        rows = "".join(f'{{"text": "{words} {i}", "label": {i % 2}}}\n' for i in range(6))
        (folder / f"{split}.jsonl").write_text(rows)
    path = folder / f"{folder.name}.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def task_path(tmp_path) -> Path:
    return write_tune_task(tmp_path / "tiny_tune")


def test_validation_split_is_scored_instead_of_test(task_path):
    task = load_task(TaskSource.from_path(task_path), split="validation")
    assert {e.text.split()[2] for e in task.eval_examples} == {"dull"}
    assert {e.text.split()[2] for e in load_task(TaskSource.from_path(task_path)).eval_examples} == {"warm"}


def test_a_task_without_validation_split_says_so(task_path):
    task_path.write_text(TASK.replace("validation_split: validation\n", ""))
    with pytest.raises(TaskError, match="no validation split"):
        load_task(TaskSource.from_path(task_path), split="validation")


def test_lr_zero_leaves_zero_shot_predictions_and_a_real_lr_changes_them(task_path):
    model, tokenizer = make_tiny_model("llama")
    task = load_task(TaskSource.from_path(task_path), split="validation")
    before = [p.detach().clone() for p in model.parameters()]

    sweep = sweep_lr(model, tokenizer, task, [0.0, 50.0])

    still, moved = sweep.trials
    assert (still.lr, still.changed, still.acc_ft) == (0.0, 0, sweep.acc_zsl)
    assert moved.changed > 0  # a huge step on a random model flips some answer
    assert all((a == b).all() for a, b in zip(before, model.parameters()))  # restored after every lr
    assert sweep.n == 6


def _sweep(*trials) -> LrSweep:
    return LrSweep("t", 10, 0.5, 0.9, tuple(LrTrial(*t) for t in trials))


def test_best_is_the_most_accurate_and_ties_go_to_the_smallest_lr():
    assert _sweep((1e-3, 0.6, 2, 0.5), (1e-2, 0.7, 5, 0.5), (3e-2, 0.7, 6, 0.6)).best.lr == 1e-2


def test_best_passes_over_lrs_that_do_nothing_or_answer_one_class():
    sweep = _sweep((1e-4, 0.8, 0, 0.5), (1e-3, 0.6, 3, 0.5), (3e-2, 0.9, 9, 1.0))
    assert sweep.best.lr == 1e-3
    lines = sweep.lines()
    assert "(FT did nothing)" in lines[1] and "(one answer for everything)" in lines[3]
    # If every lr is degenerate, the most accurate one is still reported.
    assert _sweep((1e-4, 0.8, 0, 0.5), (3e-2, 0.9, 9, 1.0)).best.lr == 3e-2


def test_default_candidates_are_half_decade_steps_over_the_papers_range():
    assert DEFAULT_LRS == tuple(sorted(DEFAULT_LRS)) and DEFAULT_LRS[0] == 1e-4 and DEFAULT_LRS[-1] == 1e-1
    ratios = [b / a for a, b in zip(DEFAULT_LRS, DEFAULT_LRS[1:])]
    assert all(2.9 < r < 3.4 for r in ratios)  # 1, 3, 10, 30, ...: log-spaced, no gaps


def test_degenerate_trials_are_the_ones_the_rule_passes_over():
    assert LrTrial(1e-3, 0.5, 0, 0.5).degenerate and LrTrial(1e-3, 0.5, 2, 1.0).degenerate
    assert not LrTrial(1e-3, 0.5, 2, 0.9).degenerate


def test_command_line_prints_a_comment_block_for_the_yaml(task_path, tmp_path, capsys):
    model = save_tiny_model("gpt2", tmp_path / "tiny-gpt2")
    assert main([str(task_path), f"--model={model}", "--lr", "0", "1e-2", "--device=cpu"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "# tiny_tune on validation, tiny-gpt2 float32, k=4 seed=1"
    assert out[1].startswith("#   ZSL ") and "(6 examples)" in out[1]
    assert [line.split(":")[0] for line in out[2:4]] == ["#   lr 0e+00", "#   lr 1e-02"]
    assert out[-1].startswith("#   best: lr ")


def test_command_line_errors_are_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "missing.yaml")]) == 2
    assert capsys.readouterr().err.startswith("error: cannot read task file")


def test_command_line_finds_a_task_name_under_tasks_first(task_path, tmp_path, monkeypatch, capsys):
    (tmp_path / "tasks").mkdir()
    task_path.rename(tmp_path / "tasks" / "tiny_tune.yaml")
    for data in task_path.parent.glob("*.jsonl"):
        data.rename(tmp_path / "tasks" / data.name)
    monkeypatch.chdir(tmp_path)
    model = save_tiny_model("gpt2", tmp_path / "tiny-gpt2")
    assert main(["tiny_tune", f"--model={model}", "--lr", "1e-2", "--device=cpu"]) == 0
    assert capsys.readouterr().out.startswith("# tiny_tune on validation")


def test_command_line_flags_take_the_pytest_options_values(task_path, capsys):
    """--shots is --icl-shots, --dtype is --icl-dtype: one grammar, one message."""
    assert main([str(task_path), "--shots", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --shots: '0' is not allowed; give a whole number ≥ 1"
    assert main([str(task_path), "--dtype", "int8"]) == 2
    assert capsys.readouterr().err.strip() == "error: --dtype: 'int8' is not allowed; give float32, bfloat16, float16 or auto"


def test_command_line_names_its_commands(capsys):
    assert command(["--help"]) == 0 and "tune" in capsys.readouterr().out
    assert command(["tuen"]) == 2 and "unknown command 'tuen'" in capsys.readouterr().err
    assert command([]) == 2


def test_the_old_spelling_runs_the_same_command():
    out = subprocess.run(
        [sys.executable, "-m", "pytest_icl.engine.tune", "--help"], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert out.startswith("usage: python -m pytest_icl tune")
