"""Tokenisation as lm-eval's HF backend does it, demonstration spans, FT's training ids, warnings."""

from __future__ import annotations

import warnings

import pytest
from tokenizers import processors
from transformers import PreTrainedTokenizerFast

from pytest_icl.engine.encoding import encode_demonstrations, encode_task
from pytest_icl.tasks.loading import Example, IclTask, TaskError, TaskSettings, TaskWarning
from tests.tiny_models import EOS, make_tokenizer

WORDS = ["hot", "cold", "up", "down", "big", "small", "fast", "slow"]


def bos_tokenizer() -> PreTrainedTokenizerFast:
    """The tiny tokenizer, adding BOS by default (as Llama and Gemma tokenizers do)."""
    tokenizer = make_tokenizer()
    bos = tokenizer.bos_token_id
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{EOS} $A", pair=f"{EOS} $A $B", special_tokens=[(EOS, bos)]
    )
    assert tokenizer.encode("hot")[0] == bos
    return tokenizer


def _task(*, description="Antonyms.\n\n", target_delimiter=" ", fewshot_delimiter="\n\n", query="Word: {}\nAntonym:", choices=None):
    def example(i):
        options = choices(i) if choices else (WORDS[(i + 1) % 8], WORDS[(i + 3) % 8])
        return Example(query.format(WORDS[i]), options, i % 2)

    return IclTask(
        name="antonyms",
        description=description,
        target_delimiter=target_delimiter,
        fewshot_delimiter=fewshot_delimiter,
        demonstrations=tuple(example(i) for i in range(3)),
        eval_examples=tuple(example(i) for i in range(3, 8)),
        settings=TaskSettings(shots=3),
        config_hash="test",
    )


@pytest.mark.parametrize("tokenizer", [make_tokenizer(), bos_tokenizer()], ids=["no-bos", "bos"])
def test_requests_are_whole_string_encodings_split_after_the_context(tokenizer):
    task = _task()
    encoded = encode_task(task, tokenizer)
    for setting, shots in ((encoded.icl, True), (encoded.zsl, False)):
        for example, context, continuations in zip(task.eval_examples, setting.contexts, setting.continuations):
            prompt = task.prompt(example, shots=shots)
            assert list(context) == tokenizer.encode(prompt)
            for choice, ids in zip(example.choices, continuations):
                assert list(ids) == tokenizer.encode(prompt + " " + choice)[len(context) :]
            assert setting.prefix == context[: setting.shared]
        assert setting.shared < min(map(len, setting.contexts))
    # the demonstrations are inside the ICL prefix, which is longer than the zero-shot one
    assert encoded.icl.shared > max(end for _, end in encoded.demo_spans) > encoded.zsl.shared


def test_trailing_whitespace_of_the_context_moves_to_the_continuation():
    tokenizer = make_tokenizer()
    task = _task(query="Word: {}\nAntonym: ", target_delimiter="")
    encoded = encode_task(task, tokenizer)
    example, context = task.eval_examples[0], encoded.icl.contexts[0]
    prompt = task.prompt(example)
    assert list(context) == tokenizer.encode(prompt.rstrip())
    assert list(encoded.icl.continuations[0][0]) == tokenizer.encode(prompt + example.choices[0])[len(context) :]
    assert tokenizer.decode(list(encoded.icl.continuations[0][0])).startswith(" ")


def test_a_choice_merging_with_the_end_of_the_context_keeps_lm_evals_split():
    # "Word: h" + "ot": the joint encoding has "Ġho", "t" where the context alone ends in "Ġh";
    # lm-eval scores whole[len(context ids):] after the context ids, and so do we.
    tokenizer = make_tokenizer()
    task = _task(query="Word: {} h", target_delimiter="", choices=lambda i: ("ot", "ome"))
    encoded = encode_task(task, tokenizer)
    prompt = task.prompt(task.eval_examples[0])
    whole = tokenizer.encode(prompt + "ot")
    context = encoded.icl.contexts[0]
    assert whole[: len(context)] != list(context)  # the merge happens
    assert list(encoded.icl.continuations[0][0]) == whole[len(context) :]


@pytest.mark.parametrize("tokenizer", [make_tokenizer(), bos_tokenizer()], ids=["no-bos", "bos"])
def test_ft_trains_on_the_demonstration_ids_inside_the_icl_context(tokenizer):
    task = _task()
    encoded = encode_task(task, tokenizer)
    bos = [tokenizer.bos_token_id] if tokenizer.encode("a")[0] == tokenizer.bos_token_id else []
    assert encoded.demo_offset == len(bos)
    for demo, (start, end), sequence in zip(task.demonstrations, encoded.demo_spans, encoded.demo_sequences):
        ids = list(encoded.icl.contexts[0][start:end])
        assert tokenizer.decode(ids) == task.demonstration_text(demo)
        assert list(sequence) == bos + ids
        for context in encoded.icl.contexts:  # the same ids in every example's context
            assert list(context[start:end]) == ids
    assert encoded.num_training_tokens == sum(len(s) - len(bos) for s in encoded.demo_sequences)
    assert encode_demonstrations(task, tokenizer).sequences == encoded.demo_sequences


def test_query_starts_mark_the_same_tokens_in_both_settings():
    tokenizer = bos_tokenizer()
    task = _task()
    encoded = encode_task(task, tokenizer)
    for example, zsl, zs, icl, is_ in zip(
        task.eval_examples, encoded.zsl.contexts, encoded.zsl.query_starts, encoded.icl.contexts, encoded.icl.query_starts
    ):
        assert zsl[zs:] == icl[is_:]
        assert tokenizer.decode(list(icl[is_:])) == example.text


def test_empty_context_is_the_prefix_token_and_a_bos_text_adds_no_bos():
    tokenizer = bos_tokenizer()
    task = _task(description="", query=EOS + "{}")
    encoded = encode_task(task, tokenizer)
    # The context starts with the BOS text: HFLM then encodes it without special tokens.
    assert list(encoded.zsl.contexts[0]) == tokenizer.encode(EOS + WORDS[3], add_special_tokens=False)
    from pytest_icl.engine.encoding import _Encoder

    context, continuation = _Encoder(tokenizer).pair("", " hot")
    assert context == [tokenizer.bos_token_id] and continuation == tokenizer.encode(" hot", add_special_tokens=False)


@pytest.mark.filterwarnings("ignore:.*the query tokenises differently")
def test_a_demonstration_boundary_inside_a_token_warns_and_keeps_the_overlapping_tokens():
    # "Topic: sp" + "orts ...": the description's last characters and the first demonstration
    # share the token "Ġsports".
    task = _task(description="Topic: sp", query="orts {} ->")
    with pytest.warns(TaskWarning, match="boundary falls inside a token"):
        encoded = encode_task(task, make_tokenizer())
    start, end = encoded.demo_spans[0]
    assert task.demonstration_text(task.demonstrations[0]) in make_tokenizer().decode(list(encoded.icl.contexts[0][start:end]))


def test_without_offsets_the_spans_come_from_prefix_encodings(monkeypatch):
    tokenizer = bos_tokenizer()
    task = _task()
    with_offsets = encode_task(task, tokenizer)
    monkeypatch.setattr(type(tokenizer), "is_fast", property(lambda self: False))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        without = encode_task(task, tokenizer)
    assert without == with_offsets


@pytest.mark.parametrize(
    ("choices", "message"),
    [(lambda i: ("same", "same"), "tokenise to the same ids"), (lambda i: ("", "up"), "tokenises to no tokens")],
)
def test_unusable_choices_are_clear_errors(choices, message):
    with pytest.raises(TaskError, match=message):
        encode_task(_task(target_delimiter="", choices=choices), make_tokenizer())


def test_too_long_prompt_says_lower_the_shots():
    with pytest.raises(TaskError, match="Lower --icl-shots"):
        encode_task(_task(), make_tokenizer(), max_length=20)
