"""Dai et al.'s FT setting: SGD on the attention keys and values, one step per demonstration.

Exactly spec §5: only every layer's key and value projections (weights and biases) change;
plain SGD (momentum 0, weight decay 0, constant learning rate, no clipping); batch size 1;
one step per demonstration, in demonstration order; the loss is the mean token-level
causal-LM loss over the whole formatted demonstration; dropout off (``model.eval()``).

The update is applied to fp32 master copies of the K/V parameters and written back, so a
bf16/fp16 model does not round most of the update away (feasibility §6: a bf16 SGD step
changes 0.3 % of the entries at lr 1e-3). Departure from the official code, which kept fp16
weights for evaluation.

The original weights are restored when the ``finetuned`` block ends: only the K/V parameters
(a few MiB) are copied, never the whole model.

During each step the queries of every demonstration token are recorded (spec §7: taken in
that step's forward pass, with the K/V weights left by the earlier steps), for Kendall.

Example::

    with finetuned(model, capture, encoded.demo_sequences, lr=1e-2) as ft:
        ...  # the model is the FT model here
    ft.train_queries   # [layers, training tokens, query dim]
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    import torch
    from torch import nn

    from pytest_icl.capture import AttentionCapture


@dataclass
class FinetuneResult:
    train_queries: torch.Tensor | None = None  # [L, N, D]
    losses: list[float] = field(default_factory=list)


@contextmanager
def finetuned(
    model: nn.Module,
    capture: AttentionCapture,
    sequences: Sequence[Sequence[int]],
    *,
    lr: float,
    demo_offset: int = 0,
    on_step: Callable[[int], None] | None = None,
) -> Iterator[FinetuneResult]:
    import torch

    parts = capture.architecture.kv_parts(model)
    kv_ids = {id(part.param) for part in parts}
    saved = [part.param.detach().clone() for part in parts]
    masters = [part.param.detach().float().clone() for part in parts]
    requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
    was_training = model.training
    result = FinetuneResult()
    device = next(model.parameters()).device
    try:
        model.eval()
        for param in model.parameters():
            param.requires_grad_(id(param) in kv_ids)
        per_layer: list[list[torch.Tensor]] = [[] for _ in range(capture.num_layers)]
        for step, sequence in enumerate(sequences):
            ids = torch.tensor([list(sequence)], device=device)
            with capture.recording([0], [0], queries="all", scores=False) as record:
                loss = model(input_ids=ids, labels=ids).loss  # mean NLL over the sequence's predicted tokens
            grads = torch.autograd.grad(loss, [part.param for part in parts])
            with torch.no_grad():
                for part, master, grad in zip(parts, masters, grads):
                    update = grad.float() * lr
                    if part.mask is not None:
                        update = update * part.mask.to(update.device)
                    master -= update
                    part.param.copy_(master)
            for layer, queries in record.queries.items():
                per_layer[layer].append(queries[demo_offset:])
            result.losses.append(loss.item())
            if on_step is not None:
                on_step(step)
        result.train_queries = torch.stack([torch.cat(q) for q in per_layer]) if sequences else None
        yield result
    finally:
        with torch.no_grad():
            for part, original in zip(parts, saved):
                part.param.copy_(original)
        for name, param in model.named_parameters():
            param.requires_grad_(requires_grad[name])
        model.train(was_training)
