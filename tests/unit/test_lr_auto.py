"""``lr: auto``: the FT lr chosen per model on the validation split, cached, with a fallback."""

import json
from pathlib import Path

import pytest

from pytest_icl.engine import tune
from pytest_icl.engine.tune import FALLBACK_LR, LrChoice, LrSweep, LrTrial, choose_lr, sweep_lr
from pytest_icl.tasks.loading import TaskSource, load_task
from tests.tiny_models import make_tiny_model
from tests.unit.test_pipeline import _hermetic  # noqa: F401 - offline, and the lr cache in tmp_path
from tests.unit.test_tune import TASK as TUNE_TASK
from tests.unit.test_tune import write_tune_task

TASK = TUNE_TASK.replace("tiny_tune", "tiny_auto").replace("{shots: 4}", "{shots: 4, lr: auto}")


@pytest.fixture
def source(tmp_path) -> TaskSource:
    return TaskSource.from_path(write_tune_task(tmp_path / "tiny_auto", TASK))


@pytest.fixture(scope="module")
def tiny():
    return make_tiny_model("llama")


def _counting(monkeypatch) -> list:
    calls = []
    real = tune.sweep_lr

    def counted(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(tune, "sweep_lr", counted)
    return calls


def test_the_choice_is_the_sweeps_rule_on_the_validation_split(tiny, source):
    model, tokenizer = tiny
    choice = choose_lr(model, tokenizer, source, weights_hash="w1", candidates=(0.0, 1.0, 50.0))
    sweep = sweep_lr(model, tokenizer, load_task(source, split="validation"), [0.0, 1.0, 50.0])
    assert choice.source == "validation"
    assert choice.trials == sweep.trials and choice.lr == sweep.best.lr
    assert choice.reason.startswith(f"tiny_auto: lr {choice.lr:g} chosen on 6 validation examples")
    # A random tiny model answers one class whatever the lr: the reason says the rule had nothing better.
    assert all(t.degenerate for t in sweep.trials) and "every candidate changed no ZSL prediction or answered one class" in choice.reason


def test_the_rule_with_known_trials(tiny, source, monkeypatch):
    """Most accurate FT among the lrs that change something without answering one class; ties: smallest."""
    trials = (LrTrial(1e-4, 0.9, 0, 0.5), LrTrial(1e-3, 0.7, 2, 0.5), LrTrial(3e-3, 0.7, 3, 0.6), LrTrial(1e-2, 0.95, 6, 1.0))
    monkeypatch.setattr(tune, "sweep_lr", lambda *a, **k: LrSweep("tiny_auto", 6, 0.5, 0.8, trials))
    choice = choose_lr(*tiny, source, weights_hash="w", candidates=[t.lr for t in trials])
    assert choice.lr == 1e-3 and "ties: smallest" in choice.reason and "FT 0.700, ZSL 0.500, ICL 0.800" in choice.reason


def test_a_second_call_reads_the_cache_and_runs_no_ft(tiny, source, monkeypatch, tmp_path):
    calls = _counting(monkeypatch)
    first = choose_lr(*tiny, source, weights_hash="w1", candidates=(0.0, 50.0))
    second = choose_lr(*tiny, source, weights_hash="w1", candidates=(0.0, 50.0))
    assert len(calls) == 1
    assert second.source == "cache" and (second.lr, second.trials) == (first.lr, first.trials)
    [stored] = (tmp_path / "cache" / "lr").glob("*.json")
    assert second.reason == f"{first.reason} (cached in {stored})"
    assert json.loads(stored.read_text())["key"]["weights"] == "w1"

    choose_lr(*tiny, source, weights_hash="w2", candidates=(0.0, 50.0))  # other weights
    choose_lr(*tiny, source, weights_hash="w1", shots=2, candidates=(0.0, 50.0))  # other demonstrations
    choose_lr(*tiny, source, weights_hash="w1", position="prompt", candidates=(0.0, 50.0))
    assert len(calls) == 4

    stored.write_text("{half a file")  # a damaged entry is chosen again, not trusted
    assert choose_lr(*tiny, source, weights_hash="w1", candidates=(0.0, 50.0)).source == "validation"
    assert len(calls) == 5


def test_the_cache_root_can_be_given(tiny, source, tmp_path):
    choose_lr(*tiny, source, weights_hash="w", candidates=(0.0,), cache_root=tmp_path / "elsewhere")
    assert len(list((tmp_path / "elsewhere" / "lr").glob("*.json"))) == 1


@pytest.mark.parametrize(
    ("lr", "expected", "says"), [("auto", FALLBACK_LR, "the default lr 0.01 (its lr is 'auto')"), ("3.0e-3", 3e-3, "its fixed lr 0.003")]
)
def test_without_a_validation_split_the_fixed_lr_is_used_and_said(tiny, source, monkeypatch, lr, expected, says):
    source.path.write_text(TASK.replace("validation_split: validation\n", "").replace("lr: auto", f"lr: {lr}"))
    calls = _counting(monkeypatch)
    choice = choose_lr(*tiny, TaskSource.from_path(source.path), weights_hash="w")
    assert choice == LrChoice(
        expected, "fixed", f"tiny_auto: no validation split to choose the FT lr on (its YAML declares no validation_split); FT uses {says}."
    )
    assert not calls


def test_local_data_files_have_no_validation_split(tiny, source, monkeypatch):
    folder = Path(source.path).parent
    data = f"{folder / 'train.jsonl'},{folder / 'test.jsonl'}"
    choice = choose_lr(*tiny, source, weights_hash="w", data=data)
    assert choice.source == "fixed" and "--icl-data gives it only train and eval files" in choice.reason
