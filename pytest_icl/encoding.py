"""Token ids for the three settings, built segment by segment.

Every prompt is ``prefix + query``: the ZSL and FT prefix is ``[BOS] + description``, the ICL
prefix adds the demonstrations. Encoding the prefix once lets every eval example reuse its
key/value cache, and keeping the demonstrations' token spans lets Kendall line up the ICL
attention to each demonstration token with the query of the same token in the FT step.

Departure from lm-eval: lm-eval tokenises ``context + continuation`` jointly; we tokenise each
segment (description, each demonstration, each delimiter, the query, each choice) on its own,
so the demonstration tokens are identical in ICL and FT and the prefix is cacheable. The text
is the same (tests check the decoded prompt against lm-eval's ``fewshot_context``); for some
tokenisers (SmolLM2: a trailing "\\n\\n") the ids at segment boundaries differ slightly.

A BOS token is prepended when the tokenizer adds one by default (as lm-eval's HF model does);
Dai et al.'s fairseq models always start with ``<s>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pytest_icl.tasks import IclTask, TaskError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class EncodedTask:
    zsl_prefix: tuple[int, ...]  # [BOS] + description
    icl_prefix: tuple[int, ...]  # [BOS] + description + Σ(demonstration + delimiter)
    demo_spans: tuple[tuple[int, int], ...]  # [start, end) of each demonstration inside icl_prefix
    demo_sequences: tuple[tuple[int, ...], ...]  # FT training sequences: [BOS] + demonstration
    demo_offset: int  # where the demonstration tokens start inside each training sequence (1 with BOS)
    queries: tuple[tuple[int, ...], ...]
    choices: tuple[tuple[tuple[int, ...], ...], ...]  # [example][choice] -> token ids
    single_token: bool  # every choice is one token: one forward scores all choices

    @property
    def num_training_tokens(self) -> int:
        return sum(end - start for start, end in self.demo_spans)

    def longest_icl_input(self) -> int:
        return len(self.icl_prefix) + max(len(q) + max(len(c) for c in cs) for q, cs in zip(self.queries, self.choices))


def _bos(tokenizer: PreTrainedTokenizerBase) -> tuple[int, ...]:
    bos = tokenizer.bos_token_id
    if bos is None:
        return ()
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return (bos,) if ids and ids[0] == bos else ()


def max_positions(config) -> int | None:
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def encode_task(task: IclTask, tokenizer: PreTrainedTokenizerBase, *, max_length: int | None = None) -> EncodedTask:
    def encode(text: str) -> tuple[int, ...]:
        return tuple(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else ()

    bos = _bos(tokenizer)
    zsl_prefix = bos + encode(task.description)
    delimiter = encode(task.fewshot_delimiter)
    icl_prefix = list(zsl_prefix)
    spans, sequences = [], []
    for demo in task.demonstrations:
        ids = encode(task.demonstration_text(demo))
        spans.append((len(icl_prefix), len(icl_prefix) + len(ids)))
        sequences.append(bos + ids)
        icl_prefix += ids + delimiter
        if len(bos + ids) < 2:
            raise TaskError(f"{task.name}: a demonstration tokenises to fewer than 2 tokens; FT has nothing to predict")

    queries, choices = [], []
    for example in task.eval_examples:
        query = encode(example.text)
        if not query:
            raise TaskError(f"{task.name}: an eval example's prompt is empty")
        encoded = tuple(encode(task.target_delimiter + choice) for choice in example.choices)
        for choice, ids in zip(example.choices, encoded):
            if not ids:
                raise TaskError(f"{task.name}: choice {choice!r} tokenises to no tokens")
        if len(set(encoded)) != len(encoded):
            same = [c for c, ids in zip(example.choices, encoded) if encoded.count(ids) > 1]
            raise TaskError(
                f"{task.name}: choices {same} tokenise to the same ids with this tokenizer, so they cannot be told apart. "
                "Use label words that differ in their tokens."
            )
        queries.append(query)
        choices.append(encoded)

    encoded_task = EncodedTask(
        zsl_prefix=zsl_prefix,
        icl_prefix=tuple(icl_prefix),
        demo_spans=tuple(spans),
        demo_sequences=tuple(sequences),
        demo_offset=len(bos),
        queries=tuple(queries),
        choices=tuple(choices),
        single_token=all(len(ids) == 1 for cs in choices for ids in cs),
    )
    if max_length is not None and encoded_task.longest_icl_input() > max_length:
        raise TaskError(
            f"{task.name}: the {len(task.demonstrations)}-shot prompt needs {encoded_task.longest_icl_input()} tokens, "
            f"but the model takes at most {max_length}. Lower --icl-shots (or icl.shots in the task YAML) "
            "or use shorter examples."
        )
    return encoded_task
