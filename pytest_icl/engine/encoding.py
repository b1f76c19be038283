"""Token ids for the three settings, exactly as lm-eval's HF backend tokenises its requests.

lm-eval scores a ``multiple_choice`` example with one ``loglikelihood`` request per choice:
``(context, target_delimiter + choice)``, where the context is the whole prompt string (ICL:
``description + Σ(demonstration + fewshot_delimiter) + query``; ZSL and FT: ``description +
query``). HFLM (``TemplateLM._encode_pair``, ``HFLM.tok_encode``) then

* moves the context's trailing whitespace to the front of the continuation;
* encodes ``whole = enc(context + continuation)`` and ``context_ids = enc(context)``, and takes
  the continuation ids from the joint encoding: ``whole[len(context_ids):]``;
* encodes with the tokenizer's default special tokens (so a BOS where the tokenizer adds one,
  and none where the text already starts with the BOS string), and replaces an empty context
  by ``[BOS]`` (else ``[EOS]``).

We do exactly that, so token ids and log-probabilities are lm-eval's
(``tests/unit/test_lm_eval_parity.py`` checks both against HFLM on every shipped task).

Two things lm-eval does not need and we do are found inside those same encodings:

* the demonstrations' token spans in the ICL context, through the tokenizer's offset mapping
  (character offsets of each token). FT trains on exactly those ids, with BOS in front where
  the tokenizer adds one, so Kendall lines up the ICL attention to each demonstration token
  with the FT query of the same token;
* where each example's own text (the query) starts: the eval tokens whose attention SimAM
  compares between settings.

The longest common token prefix of a setting's contexts is what ``runs`` encodes once and
reuses as a key/value cache. Where a tokenizer makes this exact bookkeeping impossible (a
demonstration or query boundary inside a token; no offset mapping), a :class:`TaskWarning`
says how many examples or demonstrations are affected and what is done instead.

Example::

    encoded = encode_task(task, tokenizer, max_length=2048)
    encoded.icl.contexts[0], encoded.icl.continuations[0]   # lm-eval's request ids for example 0
    encoded.demo_sequences[0]                               # FT's first training sequence
"""

from __future__ import annotations

import bisect
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pytest_icl.tasks.loading import IclTask, TaskError, TaskWarning

if TYPE_CHECKING:
    from collections.abc import Sequence

    from transformers import PreTrainedTokenizerBase

Ids = tuple[int, ...]


@dataclass(frozen=True)
class SettingEncoding:
    """One setting's requests: per eval example the context ids and each choice's continuation ids."""

    contexts: tuple[Ids, ...]  # [example] lm-eval's context ids
    continuations: tuple[tuple[Ids, ...], ...]  # [example][choice] lm-eval's continuation ids
    query_starts: tuple[int, ...]  # [example] index of the first token of the example's own text
    shared: int  # every context starts with these many equal tokens (at most the shortest - 1)

    @property
    def prefix(self) -> Ids:
        """The tokens every context starts with: encoded once, its key/value cache reused."""
        return self.contexts[0][: self.shared]

    @property
    def single_token(self) -> bool:
        """Every continuation is one token: one forward row scores all of an example's choices."""
        return all(len(ids) == 1 for choices in self.continuations for ids in choices)

    def longest_input(self) -> int:
        return max(len(c) + max(map(len, cs)) for c, cs in zip(self.contexts, self.continuations))


@dataclass(frozen=True)
class DemonstrationTokens:
    """The demonstrations as they are tokenised inside the ICL context."""

    spans: tuple[tuple[int, int], ...]  # [start, end) of each demonstration in the ICL context ids
    sequences: tuple[Ids, ...]  # FT training sequences: [BOS] + the demonstration's ids in the context
    offset: int  # where the demonstration ids start inside each training sequence (1 with BOS)


@dataclass(frozen=True)
class EncodedTask:
    zsl: SettingEncoding  # ZSL and FT: description + query
    icl: SettingEncoding  # description + demonstrations + query
    demo_spans: tuple[tuple[int, int], ...]
    demo_sequences: tuple[Ids, ...]
    demo_offset: int

    @property
    def num_training_tokens(self) -> int:
        return sum(end - start for start, end in self.demo_spans)

    def longest_icl_input(self) -> int:
        return self.icl.longest_input()

    # The shared prefixes and the ICL query remainders under their earlier names (tune.py, tests).
    @property
    def zsl_prefix(self) -> Ids:
        return self.zsl.prefix

    @property
    def icl_prefix(self) -> Ids:
        return self.icl.prefix

    @property
    def queries(self) -> tuple[Ids, ...]:
        return tuple(c[self.icl.shared :] for c in self.icl.contexts)


def max_positions(config) -> int | None:
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


class _Encoder:
    """HFLM's ``tok_encode`` and ``_encode_pair`` for one tokenizer, plus token boundaries."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self.tokenizer = tokenizer
        bos = tokenizer.bos_token_id
        self.prefix_token = bos if bos is not None else tokenizer.eos_token_id  # HFLM.prefix_token_id
        self.prefix_text = tokenizer.decode(self.prefix_token) if self.prefix_token is not None else None
        self.has_offsets = bool(getattr(tokenizer, "is_fast", False))

    def _special_kwargs(self, text: str) -> dict:
        # HFLM: no special tokens when the string already starts with the BOS text (has_bos_prefix)
        return {"add_special_tokens": False} if self.prefix_text is not None and text.startswith(self.prefix_text) else {}

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, **self._special_kwargs(text)))

    def pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """(context ids, continuation ids) as lm-eval's ``loglikelihood`` builds them."""
        if context == "":
            ids = list(self.tokenizer.encode(continuation, add_special_tokens=False))
            if ids and ids[0] == self.prefix_token:
                return ids[:1], ids[1:]
            return [self.prefix_token], ids
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        context_ids = self.encode(context)
        return context_ids, self.encode(context + continuation)[len(context_ids) :]

    def boundaries(self, text: str, ids: Sequence[int], cuts: Sequence[int]) -> list[tuple[int, bool]]:
        """For each character position in ``cuts``: the index of the first token of ``ids`` (= enc(text))
        at or after it, and whether it falls between two tokens (False: inside a token)."""
        if self.has_offsets:
            encoding = self.tokenizer(text, return_offsets_mapping=True, return_special_tokens_mask=True, **self._special_kwargs(text))
            if list(encoding["input_ids"]) == list(ids):
                offsets, special = encoding["offset_mapping"], encoding["special_tokens_mask"]
                words = [i for i, s in enumerate(special) if not s]  # BOS and the like have no characters
                ends = [offsets[i][1] for i in words]
                result = []
                for cut in cuts:
                    w = bisect.bisect_right(ends, cut)  # the first token that reaches past the cut
                    if w == len(words):
                        result.append((words[-1] + 1 if words else len(ids), True))
                    else:
                        result.append((words[w], offsets[words[w]][0] >= cut))
                return result
        # No offset mapping (a slow tokenizer): the cut is a token boundary when encoding the text
        # up to it gives a prefix of the whole encoding.
        result = []
        for cut in cuts:
            head = self.encode(text[:cut])
            clean = list(ids[: len(head)]) == list(head)
            result.append((len(head) if clean else min(len(head), len(ids)), clean))
        return result


def _common_prefix_length(sequences: Sequence[Ids]) -> int:
    first = sequences[0]
    length = min(map(len, sequences))
    for other in sequences[1:]:
        length = next((i for i in range(length) if other[i] != first[i]), length)
    return length


def _demonstration_cuts(task: IclTask) -> list[int]:
    """Character positions where each demonstration starts and ends in the ICL context string."""
    cuts, position = [], len(task.description)
    for demo in task.demonstrations:
        end = position + len(task.demonstration_text(demo))
        cuts += [position, end]
        position = end + len(task.fewshot_delimiter)
    return cuts


@dataclass(frozen=True)
class _Located:
    """Where an ICL context's demonstrations lie in its ids."""

    spans: tuple[tuple[int, int], ...]
    clean: bool  # every demonstration starts and ends between two tokens


def _encode_setting(task: IclTask, encoder: _Encoder, *, shots: bool) -> tuple[SettingEncoding, list[_Located], int]:
    """The setting's requests, each context's demonstration spans (ICL), and how many queries
    start inside a token."""
    head = task.context() if shots else task.description
    demo_cuts = _demonstration_cuts(task) if shots else []
    contexts, continuations, query_starts, located, unclean_queries = [], [], [], [], 0
    for example in task.eval_examples:
        if not example.text:
            raise TaskError(f"{task.name}: an eval example's prompt is empty")
        text = head + example.text
        pairs = [encoder.pair(text, task.target_delimiter + choice) for choice in example.choices]
        context = tuple(pairs[0][0])
        choices = tuple(tuple(ids) for _, ids in pairs)
        for choice, ids in zip(example.choices, choices):
            if not ids:
                raise TaskError(f"{task.name}: choice {choice!r} tokenises to no tokens")
        if len(set(choices)) != len(choices):
            same = [c for c, ids in zip(example.choices, choices) if choices.count(ids) > 1]
            raise TaskError(
                f"{task.name}: choices {same} tokenise to the same ids with this tokenizer, so they cannot be told apart. "
                "Use label words that differ in their tokens."
            )
        (query_start, clean), *found = encoder.boundaries(text.rstrip() or text, context, [len(head), *demo_cuts])
        unclean_queries += not clean
        # A demonstration whose boundary is inside a token keeps the tokens that overlap its text.
        spans = tuple((found[i][0], found[i + 1][0] + (not found[i + 1][1])) for i in range(0, len(found), 2))
        located.append(_Located(spans, all(c for _, c in found)))
        contexts.append(context)
        continuations.append(choices)
        query_starts.append(min(query_start, len(context) - 1))
    shared = min(_common_prefix_length(contexts), min(map(len, contexts)) - 1)
    return SettingEncoding(tuple(contexts), tuple(continuations), tuple(query_starts), shared), located, unclean_queries


def _demonstrations(task: IclTask, setting: SettingEncoding, located: list[_Located], bos: Ids) -> DemonstrationTokens:
    """Spans of the first example's context; a warning counts examples whose demonstrations differ."""
    canonical, reference = located[0].spans, setting.contexts[0]
    differing = sum(
        1
        for where, context in zip(located, setting.contexts)
        if where.spans != canonical or any(context[s:e] != reference[s:e] for s, e in canonical)
    )
    if not located[0].clean:
        warnings.warn(
            TaskWarning(
                f"{task.name}: with this tokenizer a demonstration boundary falls inside a token of the ICL context; "
                "the demonstration's tokens are taken as the tokens that overlap its text, so FT trains on a token "
                "shared with the delimiter or description."
            ),
            stacklevel=4,
        )
    if differing:
        warnings.warn(
            TaskWarning(
                f"{task.name}: in {differing} of {len(located)} examples the demonstrations tokenise differently inside "
                "the ICL context than in the first; their attention to demonstration tokens (Kendall) is read at the "
                "first example's token positions."
            ),
            stacklevel=4,
        )
    sequences = []
    for start, end in canonical:
        ids = tuple(reference[start:end])
        if len(bos + ids) < 2:
            raise TaskError(f"{task.name}: a demonstration tokenises to fewer than 2 tokens; FT has nothing to predict")
        sequences.append(bos + ids)
    return DemonstrationTokens(spans=canonical, sequences=tuple(sequences), offset=len(bos))


def _bos(encoder: _Encoder, contexts: Sequence[Ids]) -> Ids:
    """The BOS the tokenizer adds by default (as in the contexts), else nothing."""
    bos = encoder.tokenizer.bos_token_id
    return (bos,) if bos is not None and all(c and c[0] == bos for c in contexts) else ()


def encode_demonstrations(task: IclTask, tokenizer: PreTrainedTokenizerBase) -> DemonstrationTokens:
    """``task``'s demonstrations as tokenised inside its ICL context (before its first eval example):
    the training sequences when FT trains on another task's demonstrations than ICL shows."""
    from dataclasses import replace

    encoder = _Encoder(tokenizer)
    setting, located, _ = _encode_setting(replace(task, eval_examples=task.eval_examples[:1]), encoder, shots=True)
    return _demonstrations(task, setting, located, _bos(encoder, setting.contexts))


def encode_task(task: IclTask, tokenizer: PreTrainedTokenizerBase, *, max_length: int | None = None) -> EncodedTask:
    """Every eval example's ZSL and ICL requests, tokenised as lm-eval does, and FT's training ids."""
    encoder = _Encoder(tokenizer)
    zsl, _, _ = _encode_setting(task, encoder, shots=False)
    icl, located, unclean_queries = _encode_setting(task, encoder, shots=True)
    demos = _demonstrations(task, icl, located, _bos(encoder, icl.contexts))
    misaligned = sum(1 for z, zs, i, is_ in zip(zsl.contexts, zsl.query_starts, icl.contexts, icl.query_starts) if z[zs:] != i[is_:])
    if misaligned or unclean_queries:
        warnings.warn(
            TaskWarning(
                f"{task.name}: in {max(misaligned, unclean_queries)} of {len(icl.contexts)} examples the query tokenises "
                "differently after the demonstrations than zero-shot (a token spans the delimiter and the query); "
                "SimAM compares their attention maps position by position from the query's first token."
            ),
            stacklevel=2,
        )
    encoded = EncodedTask(zsl=zsl, icl=icl, demo_spans=demos.spans, demo_sequences=demos.sequences, demo_offset=demos.offset)
    if max_length is not None and encoded.longest_icl_input() > max_length:
        raise TaskError(
            f"{task.name}: the {len(task.demonstrations)}-shot prompt needs {encoded.longest_icl_input()} tokens, "
            f"but the model takes at most {max_length}. Lower --icl-shots (or icl.shots in the task YAML) "
            "or use shorter examples."
        )
    return encoded
