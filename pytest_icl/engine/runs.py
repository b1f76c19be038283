"""The three settings of Dai et al.: zero-shot (ZSL), in-context (ICL) and finetuned (FT).

Each setting scores every eval example's answer choices and records, at the analysed position,
what ``capture`` reads. Scoring is lm-eval's ``multiple_choice``: the summed log-probability of
each choice's continuation tokens after the context, on the very token ids lm-eval's HF backend
builds (``encoding``); the prediction is the argmax.

Three levels of shared work, each checked equal to re-encoding every row in full:

1. The setting's *prefix* (the longest common token prefix of its contexts: ``[BOS] +
   description`` and, for ICL, the demonstrations) is encoded once; every batch continues from a
   copy of its key/value cache.
2. When the choices are several tokens long, a batch's contexts continue once more as a *stem*
   (the next tokens after the prefix, as many as the batch's shortest context allows, less its
   last token), and each choice row continues from a copy of its example's stem cache: the
   query is encoded once instead of once per choice. Examples are batched in order of context
   length so that little of a longer query is left to the choice rows. Rows never have padding
   inside (only at their right end), so this is exact for sliding-window caches and local
   attention too.
3. When every choice is one token, one row per example (context + first choice) scores all
   choices from the logits at the context's last token (as the official code does).

Analysed position (definitions §4): ``label`` = the first choice's first token (official code),
``prompt`` = the context's last token. Both lie in the choice rows, in the first choice's row.

Example::

    records = run_settings(model, tokenizer, task)
    records.icl.correct.float().mean()
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pytest_icl.engine.capture import AttentionCapture
from pytest_icl.engine.encoding import EncodedTask, SettingEncoding, encode_demonstrations, encode_task, max_positions
from pytest_icl.engine.finetune import finetuned
from pytest_icl.models.placement import input_device

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch
    from torch import nn

    from pytest_icl.tasks.loading import IclTask


@dataclass
class SettingRecord:
    """One setting's predictions and per-layer records over the n eval examples."""

    logprobs: torch.Tensor  # [n, max choices], -inf where an example has fewer choices
    predictions: torch.Tensor  # [n]
    correct: torch.Tensor  # [n] bool
    outputs: torch.Tensor  # [n, L, d] attention output at the analysed position
    eval_scores: torch.Tensor  # [n, L, H, T] pre-softmax scores to the eval tokens, zero-padded on the right
    context_scores: torch.Tensor | None = None  # [n, L, N] head-summed scores to demonstration tokens (ICL)
    queries: torch.Tensor | None = None  # [n, L, D] scaled query at the analysed position (FT)
    next_logprobs: torch.Tensor | None = None  # [n, V] fp32 log-softmax over the vocabulary at the context's last token


@dataclass
class Records:
    zsl: SettingRecord
    icl: SettingRecord
    ft: SettingRecord
    ft_train_queries: torch.Tensor  # [L, N, D]
    ft_losses: list[float]
    gold: torch.Tensor
    num_training_tokens: int
    prompt_tokens: int  # longest ICL input
    timings: dict[str, float] = field(default_factory=dict)
    # FT's training token t is ICL's demonstration token t, demonstration by demonstration. Not
    # so when a control's labels tokenise to other lengths: Kendall(ICL, FT) is then undefined.
    ft_aligned: bool = True


def _batches(order: list[int], size: int):
    for start in range(0, len(order), size):
        yield order[start : start + size]


def _forward_cache(model: nn.Module, rows, device, cache=None):
    """Run equal-length ``rows`` (no padding) on top of ``cache``; return the extended cache."""
    import torch

    with torch.no_grad():
        return model(input_ids=torch.tensor(rows, device=device), past_key_values=cache, use_cache=True, logits_to_keep=1).past_key_values


def _rows_cache(cache, owners: list[int], device):
    """A cache with row r a copy of ``cache``'s row ``owners[r]`` (the input cache is left as it was)."""
    import torch

    cache = copy.deepcopy(cache)
    cache.batch_select_indices(torch.tensor(owners, device=device))
    return cache


def _setting_of(encoded: EncodedTask | SettingEncoding, prefix) -> SettingEncoding:
    if isinstance(encoded, SettingEncoding):
        return encoded
    # Earlier callers name the setting by its prefix (tune.py): the ICL prefix holds the demonstrations.
    return encoded.icl if prefix is not None and tuple(prefix) == encoded.icl_prefix else encoded.zsl


def score_setting(
    model: nn.Module,
    capture: AttentionCapture,
    encoded: EncodedTask | SettingEncoding,
    gold,
    *,
    prefix=None,
    position: str = "label",
    context_spans=None,
    record_queries: bool = False,
    batch_size: int = 16,
    reuse_prefix: bool = True,
    shared_query: bool = True,
    on_batch: Callable[[int], None] | None = None,
) -> SettingRecord:
    """Score and record every eval example of one setting.

    ``encoded`` is the setting's :class:`SettingEncoding` (or an :class:`EncodedTask` with
    ``prefix`` = its ``zsl_prefix`` or ``icl_prefix``). ``reuse_prefix=False`` re-encodes the
    prefix in every row and ``shared_query=False`` gives every choice its own row from the prefix
    on: the plain paths the shared ones are tested (and benchmarked) against.
    """
    import torch

    setting = _setting_of(encoded, prefix)
    device = input_device(model)
    pad = 0
    contexts, continuations = setting.contexts, setting.continuations
    shared = setting.shared if reuse_prefix else 0
    prefix_cache = _forward_cache(model, [list(setting.prefix)], device) if shared else None
    n = len(contexts)
    logprobs = torch.full((n, max(len(c) for c in continuations)), float("-inf"))
    outputs, eval_scores, context_scores, queries, next_logprobs = ([None] * n for _ in range(5))
    span_index = torch.cat([torch.arange(s, e) for s, e in context_spans]) if context_spans is not None else None
    single = setting.single_token
    order = sorted(range(n), key=lambda i: len(contexts[i]))

    for batch in _batches(order, batch_size):
        # Level 2: the stem every example of the batch encodes once before its choice rows.
        stem = min(len(contexts[i]) for i in batch) - 1 - shared if shared_query and not single else 0
        stem_cache = None
        if stem > 0:
            stem_cache = _rows_cache(prefix_cache, [0] * len(batch), device) if prefix_cache is not None else None
            stem_cache = _forward_cache(model, [list(contexts[i][shared : shared + stem]) for i in batch], device, stem_cache)
        start = shared + stem  # tokens every choice row continues from

        rows, owners, capture_rows, capture_positions = [], [], [], []
        for k, i in enumerate(batch):
            tail = list(contexts[i][start:])
            capture_rows.append(len(rows))
            capture_positions.append(len(contexts[i]) - start - (position == "prompt"))
            for j, ids in enumerate(continuations[i][:1] if single else continuations[i]):
                rows.append(tail + list(ids))
                owners.append((k, i, j))
        width = max(len(r) for r in rows)
        input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
        kwargs = {}
        cache = None
        if stem_cache is not None:  # ours alone: select its rows in place
            cache = stem_cache
            cache.batch_select_indices(torch.tensor([k for k, _, _ in owners], device=device))
        elif prefix_cache is not None:
            cache = _rows_cache(prefix_cache, [0] * len(rows), device)
        if cache is not None:
            mask = torch.cat([torch.ones(len(rows), start, dtype=mask.dtype, device=device), mask], dim=1)
            kwargs = {"past_key_values": cache, "use_cache": True}
        # The (row, position) pairs whose next-token distribution scores a choice token; only
        # their logits are computed (Gemma 3's vocabulary projection is 262k wide).
        pairs = []
        for row, (_, i, j) in enumerate(owners):
            steps = 1 if single else len(continuations[i][j])
            pairs += [(row, len(contexts[i]) - 1 - start + t) for t in range(steps)]
        keep = sorted({p for _, p in pairs})
        column = {p: c for c, p in enumerate(keep)}
        with (
            torch.no_grad(),
            capture.recording(capture_rows, capture_positions, queries="at_positions" if record_queries else "none") as record,
        ):
            # keep is a list: under a device map accelerate's hooks would move a tensor to the first GPU.
            logits = model(input_ids=input_ids, attention_mask=mask, logits_to_keep=keep, **kwargs).logits
        picked = torch.log_softmax(
            logits[torch.tensor([r for r, _ in pairs]), torch.tensor([column[p] for _, p in pairs])].float(), dim=-1
        ).cpu()  # [pairs, V]

        cursor = 0
        for _, i, j in owners:
            if j == 0:
                next_logprobs[i] = picked[cursor]
            if single:  # one row scores every single-token choice
                logprobs[i, : len(continuations[i])] = picked[cursor, [c[0] for c in continuations[i]]]
                cursor += 1
            else:
                ids = continuations[i][j]
                logprobs[i, j] = picked[torch.arange(cursor, cursor + len(ids)), list(ids)].sum()
                cursor += len(ids)

        layers = range(capture.num_layers)
        keys = start + width
        for k, i in enumerate(batch):
            outputs[i] = torch.stack([record.outputs[layer][k] for layer in layers])
            # A sliding-window cache (Gemma 3's local layers) keeps only the last keys: align
            # every layer's scores to absolute key positions, unseen keys scoring 0 like masked ones.
            scores = torch.stack(
                [torch.nn.functional.pad(record.scores[layer][k], (keys - record.scores[layer][k].shape[-1], 0)) for layer in layers]
            )  # [L, H, keys]
            analysed = start + capture_positions[k]
            eval_scores[i] = scores[:, :, setting.query_starts[i] : analysed + 1]
            if span_index is not None:
                context_scores[i] = scores[:, :, span_index].sum(dim=1)
            if record_queries:
                queries[i] = torch.stack([record.queries[layer][k] for layer in layers])
        if on_batch is not None:
            on_batch(len(batch))

    width = max(s.shape[-1] for s in eval_scores)
    padded = torch.stack([torch.nn.functional.pad(s, (0, width - s.shape[-1])) for s in eval_scores])
    predictions = logprobs.argmax(dim=1)
    return SettingRecord(
        logprobs=logprobs,
        predictions=predictions,
        correct=predictions == gold,
        outputs=torch.stack(outputs),
        eval_scores=padded,
        context_scores=torch.stack(context_scores) if span_index is not None else None,
        queries=torch.stack(queries) if record_queries else None,
        next_logprobs=torch.stack(next_logprobs),
    )


def run_settings(
    model: nn.Module,
    tokenizer,
    task: IclTask,
    *,
    batch_size: int = 16,
    reuse_prefix: bool = True,
    shared_query: bool = True,
    progress: Callable[[str, int, int], None] | None = None,
    ft_task: IclTask | None = None,
    ft_objective: str = "gd",
    reuse: Records | None = None,
    zsl: SettingRecord | None = None,
) -> Records:
    """ZSL, ICL and FT on ``task``; the model's weights are unchanged afterwards.

    ``ft_task``: FT trains on its demonstrations instead of ``task``'s (a control, e.g. the same
    demonstrations with shuffled labels), tokenised by the same rules inside its own ICL context.
    ``ft_objective`` goes to :func:`pytest_icl.engine.finetune.finetuned` as ``objective``.
    ``reuse``: ZSL and ICL are taken from these records (of the same task and model); only FT runs.
    ``zsl``: the ZSL record of the same eval examples and model (another draw of demonstrations
    scored it already: ZSL sees no demonstration), so only ICL and FT run.
    """
    import torch

    encoded = encode_task(task, tokenizer, max_length=max_positions(model.config))
    if ft_task is None:
        training, offset = encoded.demo_sequences, encoded.demo_offset
    else:
        demonstrations = encode_demonstrations(ft_task, tokenizer)
        training, offset = demonstrations.sequences, demonstrations.offset
    gold = torch.tensor([e.gold for e in task.eval_examples])
    n = len(task.eval_examples)
    timings: dict[str, float] = {}

    def report(stage: str, total: int):
        done = [0]

        def step(count: int = 1):
            done[0] += count if isinstance(count, int) and count > 0 else 1
            if progress is not None:
                progress(stage, done[0], total)

        return step

    capture = AttentionCapture(model)
    try:
        common = dict(position=task.settings.position, batch_size=batch_size, reuse_prefix=reuse_prefix, shared_query=shared_query)
        if reuse is not None:
            zsl, icl = reuse.zsl, reuse.icl
        else:
            if zsl is None:
                start = time.perf_counter()
                zsl = score_setting(model, capture, encoded.zsl, gold, on_batch=report("ZSL", n), **common)
                timings["zsl"] = time.perf_counter() - start

            start = time.perf_counter()
            icl = score_setting(model, capture, encoded.icl, gold, context_spans=encoded.demo_spans, on_batch=report("ICL", n), **common)
            timings["icl"] = time.perf_counter() - start

        start = time.perf_counter()
        steps = report("FT steps", len(training))
        with finetuned(
            model, capture, training, lr=task.settings.lr, demo_offset=offset, on_step=lambda _: steps(), objective=ft_objective
        ) as result:
            timings["ft_train"] = time.perf_counter() - start
            start = time.perf_counter()
            ft = score_setting(model, capture, encoded.zsl, gold, record_queries=True, on_batch=report("FT", n), **common)
            timings["ft_eval"] = time.perf_counter() - start
    finally:
        capture.remove()
    return Records(
        zsl=zsl,
        icl=icl,
        ft=ft,
        ft_train_queries=result.train_queries,
        ft_losses=result.losses,
        gold=gold,
        num_training_tokens=sum(len(s) - offset for s in training),
        prompt_tokens=encoded.longest_icl_input(),
        timings=timings,
        ft_aligned=[len(s) for s in training] == [len(s) for s in encoded.demo_sequences],
    )
