"""The three settings of Dai et al.: zero-shot (ZSL), in-context (ICL) and finetuned (FT).

Each setting scores every eval example's answer choices and records, at the analysed position,
what ``capture`` reads. The prefix (``[BOS] + description`` for ZSL and FT, plus the
demonstrations for ICL) is encoded once and its key/value cache reused for every batch of eval
examples; a test checks this equals re-encoding the whole prompt.

Scoring follows lm-eval's ``multiple_choice``: the log-probability of each choice's tokens after
the prompt, summed over the choice's tokens; the prediction is the argmax. When every choice is
one token, one forward per example scores all of them (the row is ``query + first choice``, as
in the official code, whose logits at the last prompt token give every choice's score).
Otherwise each example gets one row per choice, and only the first choice's row is recorded.

Analysed position (spec §4): ``label`` = the appended first choice's first token (official
code), ``prompt`` = the prompt's last token.

Example::

    records = run_settings(model, tokenizer, task)
    records.icl.correct.float().mean()
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pytest_icl.capture import AttentionCapture
from pytest_icl.encoding import EncodedTask, encode_task, max_positions
from pytest_icl.finetune import finetuned

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch
    from torch import nn

    from pytest_icl.tasks import IclTask


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


Progress = "Callable[[str, int, int], None]"


def _batches(n: int, size: int):
    for start in range(0, n, size):
        yield range(start, min(start + size, n))


def _prefix_cache(model: nn.Module, prefix, device):
    import torch

    if not prefix:
        return None
    with torch.no_grad():
        return model(input_ids=torch.tensor([list(prefix)], device=device), use_cache=True).past_key_values


def score_setting(
    model: nn.Module,
    capture: AttentionCapture,
    encoded: EncodedTask,
    gold,
    *,
    prefix,
    position: str = "label",
    context_spans=None,
    record_queries: bool = False,
    batch_size: int = 16,
    reuse_prefix: bool = True,
    on_batch: Callable[[int], None] | None = None,
) -> SettingRecord:
    """Score and record every eval example with ``prefix`` in front of its query."""
    import torch

    device = next(model.parameters()).device
    pad = 0
    prefix = list(prefix)
    cache = _prefix_cache(model, prefix, device) if reuse_prefix else None
    n = len(encoded.queries)
    max_choices = max(len(c) for c in encoded.choices)
    logprobs = torch.full((n, max_choices), float("-inf"))
    outputs, eval_scores, context_scores, queries = [None] * n, [None] * n, [None] * n, [None] * n
    span_index = None
    if context_spans is not None:
        span_index = torch.cat([torch.arange(start, end) for start, end in context_spans])

    for batch in _batches(n, batch_size):
        rows, owners, capture_rows, capture_positions = [], [], [], []
        for i in batch:
            query, choices = list(encoded.queries[i]), encoded.choices[i]
            analysed = len(query) if position == "label" else len(query) - 1
            if encoded.single_token:
                capture_rows.append(len(rows))
                capture_positions.append(analysed + (0 if reuse_prefix else len(prefix)))
                rows.append(query + list(choices[0]))
                owners.append((i, None))
            else:
                for j, ids in enumerate(choices):
                    if j == 0:
                        capture_rows.append(len(rows))
                        capture_positions.append(analysed + (0 if reuse_prefix else len(prefix)))
                    rows.append(query + list(ids))
                    owners.append((i, j))
        if not reuse_prefix:
            rows = [prefix + row for row in rows]
        width = max(len(r) for r in rows)
        input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
        kwargs = {}
        offset = 0 if reuse_prefix else len(prefix)
        if cache is not None:
            batch_cache = copy.deepcopy(cache)
            batch_cache.batch_repeat_interleave(len(rows))
            mask = torch.cat([torch.ones(len(rows), len(prefix), dtype=mask.dtype, device=device), mask], dim=1)
            kwargs = {"past_key_values": batch_cache, "use_cache": True}
        # Only the positions that predict a choice token need the vocabulary projection
        # (Gemma 3's is 262k wide): ask the model for those logits alone.
        needed = set()
        for i, j in owners:
            start = len(encoded.queries[i]) + offset - 1
            needed.update(range(start, start + (1 if j is None else len(encoded.choices[i][j]))))
        keep = sorted(needed)
        column = {position: index for index, position in enumerate(keep)}
        with torch.no_grad(), capture.recording(
            capture_rows, capture_positions, queries="at_positions" if record_queries else "none"
        ) as record:
            logits = model(
                input_ids=input_ids, attention_mask=mask, logits_to_keep=torch.tensor(keep, device=device), **kwargs
            ).logits
        log_softmax = torch.log_softmax(logits.float(), dim=-1).cpu()

        for row, (i, j) in enumerate(owners):
            query_length = len(encoded.queries[i]) + offset
            if j is None:  # one row scores every single-token choice
                ids = torch.tensor([c[0] for c in encoded.choices[i]])
                logprobs[i, : len(ids)] = log_softmax[row, column[query_length - 1], ids]
            else:
                ids = torch.tensor(encoded.choices[i][j])
                steps = torch.tensor([column[query_length - 1 + t] for t in range(len(ids))])
                logprobs[i, j] = log_softmax[row, steps, ids].sum()

        layers = range(capture.num_layers)
        keys = width + (len(prefix) if cache is not None else 0)
        for k, i in enumerate(batch):
            outputs[i] = torch.stack([record.outputs[layer][k] for layer in layers])
            # A sliding-window cache (Gemma 3's local layers) keeps only the last keys: align
            # every layer's scores to absolute key positions, unseen keys scoring 0 like masked ones.
            scores = torch.stack(
                [torch.nn.functional.pad(record.scores[layer][k], (keys - record.scores[layer][k].shape[-1], 0)) for layer in layers]
            )  # [L, H, keys]
            key_prefix = len(prefix)
            analysed = capture_positions[k] - offset
            eval_scores[i] = scores[:, :, key_prefix : key_prefix + analysed + 1]
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
    )


def run_settings(
    model: nn.Module,
    tokenizer,
    task: IclTask,
    *,
    batch_size: int = 16,
    reuse_prefix: bool = True,
    progress: Callable[[str, int, int], None] | None = None,
) -> Records:
    """ZSL, ICL and FT on ``task``; the model's weights are unchanged afterwards."""
    import torch

    encoded = encode_task(task, tokenizer, max_length=max_positions(model.config))
    gold = torch.tensor([e.gold for e in task.eval_examples])
    position = task.settings.position
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
        common = dict(position=position, batch_size=batch_size, reuse_prefix=reuse_prefix)
        start = time.perf_counter()
        zsl = score_setting(model, capture, encoded, gold, prefix=encoded.zsl_prefix, on_batch=report("ZSL", n), **common)
        timings["zsl"] = time.perf_counter() - start

        start = time.perf_counter()
        icl = score_setting(
            model, capture, encoded, gold, prefix=encoded.icl_prefix, context_spans=encoded.demo_spans,
            on_batch=report("ICL", n), **common,
        )
        timings["icl"] = time.perf_counter() - start

        start = time.perf_counter()
        steps = report("FT steps", len(encoded.demo_sequences))
        with finetuned(
            model, capture, encoded.demo_sequences, lr=task.settings.lr, demo_offset=encoded.demo_offset,
            on_step=lambda _: steps(),
        ) as result:
            timings["ft_train"] = time.perf_counter() - start
            start = time.perf_counter()
            ft = score_setting(
                model, capture, encoded, gold, prefix=encoded.zsl_prefix, record_queries=True,
                on_batch=report("FT", n), **common,
            )
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
        num_training_tokens=encoded.num_training_tokens,
        prompt_tokens=encoded.longest_icl_input(),
        timings=timings,
    )
