"""The three settings: prefix-cache reuse, scoring, finetuning, determinism."""

import math

import pytest
import torch

from pytest_icl.analysis.aggregate import analyse
from pytest_icl.engine.capture import AttentionCapture
from pytest_icl.engine.encoding import encode_task
from pytest_icl.engine.finetune import finetuned
from pytest_icl.engine.runs import run_settings
from pytest_icl.models.architectures import architecture_of
from pytest_icl.tasks.loading import Example, IclTask, TaskSettings
from tests.tiny_models import make_tiny_model

WORDS = ["hot", "cold", "up", "down", "big", "small", "fast", "slow", "wet", "dry", "old", "new"]


def _task(*, multi_token=False, shots=4, position="label", lr=0.1) -> IclTask:
    def example(i):
        choices = ("a " + WORDS[(i + 1) % 12] + " one", WORDS[(i + 5) % 12]) if multi_token else (WORDS[(i + 1) % 12], WORDS[(i + 5) % 12])
        return Example(f"Word: {WORDS[i]}\nAntonym:", choices, i % 2)

    return IclTask(
        name="antonyms",
        description="Antonyms.\n\n",
        target_delimiter=" ",
        fewshot_delimiter="\n\n",
        demonstrations=tuple(example(i) for i in range(shots)),
        eval_examples=tuple(example(i) for i in range(shots, 12)),
        settings=TaskSettings(shots=shots, lr=lr, position=position),
        config_hash="test",
    )


def _assert_same_records(a, b, *, atol=1e-5):
    for setting in ("zsl", "icl", "ft"):
        x, y = getattr(a, setting), getattr(b, setting)
        assert (x.logprobs - y.logprobs).abs().max() < atol
        assert torch.equal(x.predictions, y.predictions)
        torch.testing.assert_close(x.outputs, y.outputs, atol=atol, rtol=1e-4)
        torch.testing.assert_close(x.eval_scores, y.eval_scores, atol=atol, rtol=1e-4)
        torch.testing.assert_close(x.next_logprobs, y.next_logprobs, atol=atol, rtol=1e-4)
    torch.testing.assert_close(a.icl.context_scores, b.icl.context_scores, atol=atol, rtol=1e-4)
    torch.testing.assert_close(a.ft.queries, b.ft.queries, atol=atol, rtol=1e-4)
    assert a.ft_losses == pytest.approx(b.ft_losses, abs=1e-6)


# Gemma 3 (sliding-window cache) and GPT-Neo (local attention) see only the last 4 keys in their
# local layers: any padding inside a row would show there.
@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neo", "gemma3", "qwen2", "xglm"])
@pytest.mark.parametrize("multi_token", [False, True], ids=["single-token", "multi-token"])
def test_prefix_and_query_reuse_equal_reencoding_every_row(arch, multi_token):
    model, tokenizer = make_tiny_model(arch)
    task = _task(multi_token=multi_token)
    shared = run_settings(model, tokenizer, task, batch_size=3)
    plain = run_settings(model, tokenizer, task, batch_size=8, reuse_prefix=False, shared_query=False)
    _assert_same_records(shared, plain)


@pytest.mark.parametrize("arch", ["gemma3", "gpt_neo", "llama"])
def test_two_level_choice_scoring_equals_one_row_per_choice(arch):
    """Issue 10.3: the query encoded once, its cache copied per choice, vs a row per choice."""
    model, tokenizer = make_tiny_model(arch)
    task = _task(multi_token=True)
    assert not encode_task(task, tokenizer).icl.single_token
    two_level = run_settings(model, tokenizer, task, batch_size=4)
    row_per_choice = run_settings(model, tokenizer, task, batch_size=4, shared_query=False)
    _assert_same_records(two_level, row_per_choice)


def test_choice_scores_are_summed_token_logprobs():
    model, tokenizer = make_tiny_model("llama")
    task = _task(multi_token=True)
    records = run_settings(model, tokenizer, task)
    example = task.eval_examples[0]
    # Independent: score the full ICL prompt + choice text in one plain forward.
    encoded = encode_task(task, tokenizer)
    for j, choice_ids in enumerate(encoded.icl.continuations[0]):
        ids = list(encoded.icl.contexts[0]) + list(choice_ids)
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
        start = len(ids) - len(choice_ids)
        expected = sum(logp[start - 1 + t, tok].item() for t, tok in enumerate(choice_ids))
        assert records.icl.logprobs[0, j].item() == pytest.approx(expected, abs=1e-4)
    assert len(encoded.icl.continuations[0][0]) > 1 and example.choices[0].startswith("a ")


def test_shapes_and_position_choice():
    model, tokenizer = make_tiny_model("gpt2")
    label = run_settings(model, tokenizer, _task(position="label"))
    prompt = run_settings(model, tokenizer, _task(position="prompt"))
    n, layers = 8, 2
    assert label.icl.outputs.shape == (n, layers, 32)
    assert label.icl.eval_scores.shape[:3] == (n, layers, 4)
    # the label position sees one more eval token (the appended first choice) than the prompt's last token
    assert label.icl.eval_scores.shape[-1] == prompt.icl.eval_scores.shape[-1] + 1
    assert label.icl.context_scores.shape == (n, layers, label.num_training_tokens)
    assert label.ft_train_queries.shape == (layers, label.num_training_tokens, 32)
    assert label.ft.queries.shape == (n, layers, 32)
    assert torch.equal(label.icl.logprobs, prompt.icl.logprobs)  # scoring does not depend on the position


def test_runs_are_deterministic_bit_for_bit():
    model, tokenizer = make_tiny_model("llama")
    task = _task()
    first, second = run_settings(model, tokenizer, task), run_settings(model, tokenizer, task)
    for setting in ("zsl", "icl", "ft"):
        assert torch.equal(getattr(first, setting).outputs, getattr(second, setting).outputs)
        assert torch.equal(getattr(first, setting).eval_scores, getattr(second, setting).eval_scores)
    assert first.ft_losses == second.ft_losses
    a, b = analyse(first).values, analyse(second).values
    assert a.keys() == b.keys()
    assert all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gpt_neox", "xglm"])
def test_finetuning_changes_only_keys_and_values_and_restores_them(arch):
    model, tokenizer = make_tiny_model(arch)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
    encoded = encode_task(_task(), tokenizer)
    capture = AttentionCapture(model)
    kv = architecture_of(model).kv_parts(model)
    with finetuned(model, capture, encoded.demo_sequences, lr=0.5, demo_offset=encoded.demo_offset) as result:
        changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
        for part in kv:
            name = next(n for n, p in model.named_parameters() if p is part.param)
            delta = part.param.detach() - before[name]
            if part.mask is not None:  # fused QKV: the query entries stay as they were
                assert torch.all(delta[~part.mask] == 0) and torch.any(delta[part.mask] != 0)
    capture.remove()
    kv_names = {n for n, p in model.named_parameters() if any(p is part.param for part in kv)}
    assert changed and changed <= kv_names
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())
    assert {name: p.requires_grad for name, p in model.named_parameters()} == requires_grad
    assert len(result.losses) == len(encoded.demo_sequences)
    assert result.train_queries.shape[1] == encoded.num_training_tokens


def test_finetuning_is_plain_sgd_on_the_mean_token_loss():
    model, tokenizer = make_tiny_model("llama")
    encoded = encode_task(_task(shots=1), tokenizer)
    sequence = torch.tensor([list(encoded.demo_sequences[0])])
    k = model.model.layers[0].self_attn.k_proj.weight
    loss = model(input_ids=sequence, labels=sequence).loss
    expected = k.detach() - 0.3 * torch.autograd.grad(loss, k)[0]
    capture = AttentionCapture(model)
    with finetuned(model, capture, encoded.demo_sequences, lr=0.3):
        torch.testing.assert_close(k.detach(), expected)
    capture.remove()


def test_bf16_model_keeps_fp32_master_updates():
    model, tokenizer = make_tiny_model("llama")
    model = model.to(torch.bfloat16)
    encoded = encode_task(_task(), tokenizer)
    k = model.model.layers[0].self_attn.k_proj.weight
    before = k.detach().clone()
    capture = AttentionCapture(model)
    with finetuned(model, capture, encoded.demo_sequences, lr=1e-3):
        changed = (k.detach() != before).float().mean().item()
    capture.remove()
    assert torch.equal(k, before)
    assert changed > 0.0


@pytest.mark.parametrize("arch", ["gpt2"])  # the row structure is what matters; sliding caches are covered above
def test_two_level_scoring_when_a_choice_merges_with_the_query(arch):
    # "Word: x h" + "ot"/"ome"/"ouse": lm-eval takes the continuation ids from the joint encoding
    # ("Ġho", "t"), so a choice row is not the context plus the choice's own encoding.
    model, tokenizer = make_tiny_model(arch)
    examples = tuple(Example(f"Word: {w} h", ("ot", "ome", "ouse"), i % 3) for i, w in enumerate(WORDS))
    task = IclTask("merge", "", "", "\n", examples[:3], examples[3:], TaskSettings(shots=3, lr=0.1), "test")
    encoded = encode_task(task, tokenizer)
    context = encoded.icl.contexts[0]
    assert tokenizer.encode(task.prompt(task.eval_examples[0]) + "ot")[: len(context)] != list(context)
    two_level = run_settings(model, tokenizer, task, batch_size=4)
    plain = run_settings(model, tokenizer, task, batch_size=4, reuse_prefix=False, shared_query=False)
    _assert_same_records(two_level, plain)


def test_next_logprobs_are_the_vocabulary_distribution_after_the_context():
    model, tokenizer = make_tiny_model("qwen2")
    task = _task(multi_token=True)
    records = run_settings(model, tokenizer, task)
    encoded = encode_task(task, tokenizer)
    assert records.icl.next_logprobs.shape == (len(task.eval_examples), model.config.vocab_size)
    for setting in ("zsl", "icl"):
        context = getattr(encoded, setting).contexts[2]
        with torch.no_grad():
            expected = torch.log_softmax(model(torch.tensor([list(context)])).logits[0, -1].float(), -1)
        torch.testing.assert_close(getattr(records, setting).next_logprobs[2], expected, atol=1e-5, rtol=1e-4)


def test_reuse_runs_only_ft():
    model, tokenizer = make_tiny_model("gpt2")
    task = _task()
    first = run_settings(model, tokenizer, task)
    again = run_settings(model, tokenizer, task, reuse=first)
    assert again.zsl is first.zsl and again.icl is first.icl
    assert "icl" not in again.timings and "ft_eval" in again.timings
    torch.testing.assert_close(again.ft.outputs, first.ft.outputs)
    assert again.ft_losses == first.ft_losses


def test_ft_task_gives_fts_training_sequences():
    from dataclasses import replace

    from pytest_icl.engine.encoding import encode_demonstrations

    model, tokenizer = make_tiny_model("llama")
    task = _task()
    flipped = replace(task, demonstrations=tuple(replace(d, gold=1 - d.gold) for d in task.demonstrations))
    records = run_settings(model, tokenizer, task, ft_task=flipped)
    sequences = encode_demonstrations(flipped, tokenizer).sequences
    capture = AttentionCapture(model)
    with finetuned(model, capture, sequences, lr=task.settings.lr) as expected:
        pass
    capture.remove()
    assert records.ft_losses == pytest.approx(expected.losses, abs=1e-6)
    assert records.ft_losses != pytest.approx(run_settings(model, tokenizer, task).ft_losses, abs=1e-6)
    assert records.num_training_tokens == sum(map(len, sequences))


def test_ft_objective_goes_to_finetuned(monkeypatch):
    from contextlib import contextmanager

    import pytest_icl.engine.runs as runs

    seen = []

    @contextmanager
    def spy(*args, **kwargs):
        seen.append(kwargs.get("objective"))
        with finetuned(*args, **kwargs) as result:
            yield result

    monkeypatch.setattr(runs, "finetuned", spy)
    model, tokenizer = make_tiny_model("gpt2")
    run_settings(model, tokenizer, _task(shots=2), ft_objective="gd")
    run_settings(model, tokenizer, _task(shots=2), ft_objective="lcgd")
    assert seen == ["gd", "lcgd"]
