"""Same token ids, log-probabilities and accuracy as lm-eval's HF backend (issue 8.1).

For every shipped made-up task and every tiny architecture, the ZSL and ICL requests are built
as lm-eval's ``ConfigurableTask.construct_requests`` builds a ``multiple_choice`` request
(``(context, target_delimiter + choice)`` per choice) and given to
``lm_eval.models.huggingface.HFLM`` wrapping the same model object: its ``_encode_pair`` gives the
token ids, its ``loglikelihood`` the scores we compare with ``runs.score_setting``.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from pytest_icl.engine.capture import AttentionCapture
from pytest_icl.engine.encoding import encode_task
from pytest_icl.engine.runs import score_setting
from pytest_icl.tasks.loading import TaskSource, load_task
from tests.tiny_models import ARCHS, make_tiny_model, make_tokenizer

TASKS = Path(__file__).resolve().parents[2] / "tasks"
MADE_UP = ("antonym_choice", "sentiment_blue_red", "syllable_first", "topic_nonce")
SHOTS = 2  # the tiny models take 256 positions (the tiny tokenizer needs ~40 tokens a demonstration); 2 keeps the file fast


@functools.cache
def _task(name: str):
    return load_task(TaskSource.from_path(TASKS / name / f"{name}.yaml"), shots=SHOTS, limit=8)


def _requests(task, *, shots: bool):
    from lm_eval.api.instance import Instance

    return [
        [
            Instance(
                request_type="loglikelihood", doc={}, arguments=(task.prompt(example, shots=shots), task.target_delimiter + choice), idx=j
            )
            for j, choice in enumerate(example.choices)
        ]
        for example in task.eval_examples
    ]


def _hflm(model, tokenizer):
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=64, device="cpu")


@pytest.mark.parametrize("name", MADE_UP)
def test_token_ids_are_lm_evals_requests(name):
    task = _task(name)
    model, tokenizer = make_tiny_model("gpt2")
    lm = _hflm(model, tokenizer)
    encoded = encode_task(task, tokenizer, max_length=lm.max_length)
    for setting, shots in ((encoded.icl, True), (encoded.zsl, False)):
        for requests, context, continuations in zip(_requests(task, shots=shots), setting.contexts, setting.continuations):
            for request, continuation in zip(requests, continuations):
                assert lm._encode_pair(*request.args) == (list(context), list(continuation))


@pytest.mark.parametrize("arch", ARCHS)
def test_logprobs_and_accuracy_equal_hflm_loglikelihood(arch):
    model, tokenizer = make_tiny_model(arch)
    lm = _hflm(model, tokenizer)
    ours, requests = {}, {}
    capture = AttentionCapture(model)
    try:
        for name in MADE_UP:
            task = _task(name)
            encoded = encode_task(task, tokenizer, max_length=lm.max_length)
            gold = torch.tensor([e.gold for e in task.eval_examples])
            ours[name, "icl"] = score_setting(model, capture, encoded.icl, gold, context_spans=encoded.demo_spans)
            ours[name, "zsl"] = score_setting(model, capture, encoded.zsl, gold)
            for setting in ("icl", "zsl"):
                requests[name, setting] = _requests(task, shots=setting == "icl")
    finally:
        capture.remove()
    # One loglikelihood call for everything: HFLM batches and reorders requests itself.
    flat = iter(lm.loglikelihood([r for rs in requests.values() for example in rs for r in example], disable_tqdm=True))
    for (name, setting), record in ours.items():
        theirs = torch.full_like(record.logprobs, float("-inf"))
        for i, example in enumerate(requests[name, setting]):
            for j in range(len(example)):
                theirs[i, j] = next(flat)[0]
        gold = torch.tensor([e.gold for e in _task(name).eval_examples])
        assert (record.logprobs - theirs).abs().max() < 1e-4, f"{name} {setting}"
        assert torch.equal(record.correct, theirs.argmax(dim=1) == gold), f"{name} {setting}"


def test_the_tiny_tokenizer_leaves_room_for_the_shots():
    # A guard for the test above: every task's ICL prompt fits the tiny models, so nothing is truncated.
    tokenizer = make_tokenizer()
    for name in MADE_UP:
        assert encode_task(_task(name), tokenizer).longest_icl_input() <= 256


# ---- the real lm-eval: simple_evaluate with --model hf on a model folder, the shipped YAMLs as they are


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from tests.tiny_models import save_tiny_model

    return save_tiny_model("gpt2", tmp_path_factory.mktemp("lm-eval-parity") / "tiny-gpt2")


def _simple_evaluate(folder: Path, limit: int | None) -> dict:
    """``lm_eval run --model hf --model_args pretrained=FOLDER --include_path tasks --num_fewshot 2 [--limit N]``."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    return lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={folder},dtype=float32",
        device="cpu",
        batch_size=16,
        tasks=list(MADE_UP),
        task_manager=TaskManager(include_path=str(TASKS), include_defaults=False),
        num_fewshot=SHOTS,
        limit=limit,
        log_samples=True,
    )  # fmt: skip  (seeds as lm-eval's defaults: fewshot seed 1234, which first_n does not use)


@pytest.mark.parametrize("limit", [None, 5], ids=["all-documents", "limit-5"])
def test_lm_eval_simple_evaluate_acc_equals_pytest_icls_icl_accuracy(tiny_folder, limit, monkeypatch):
    from pytest_icl.engine.runs import run_settings
    from pytest_icl.models.loading import load_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    out = _simple_evaluate(tiny_folder, limit)
    with load_model(str(tiny_folder), device="cpu") as lm:
        for name in MADE_UP:
            task = load_task(TaskSource.from_path(TASKS / name / f"{name}.yaml"), shots=SHOTS, limit=limit)
            records = run_settings(lm.model, lm.tokenizer, task)
            assert records.prompt_tokens <= 256  # HFLM left-truncates a longer context without a word
            samples = sorted(out["samples"][name], key=lambda s: s["doc_id"])
            assert len(samples) == len(task.eval_examples) == (limit or 64)
            for i, (sample, example) in enumerate(zip(samples, task.eval_examples)):
                contexts = {argument[0] for argument in sample["arguments"]}
                assert contexts == {task.prompt(example)}, (name, i)  # lm-eval's document i, its demonstrations
                theirs = torch.tensor([resp[0][0] for resp in sample["resps"]], dtype=torch.float64)
                ours = records.icl.logprobs[i, : len(theirs)].double()
                assert (ours - theirs).abs().max() < 1e-4, (name, i)
            n = len(task.eval_examples)
            assert out["results"][name]["acc,none"] == int(records.icl.correct.sum()) / n, name
