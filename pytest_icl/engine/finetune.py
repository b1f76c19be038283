"""Dai et al.'s FT setting: SGD on the attention keys and values, one step per demonstration.

Exactly definitions §5: only every layer's key and value projections (weights and biases) change;
plain SGD (momentum 0, weight decay 0, constant learning rate, no clipping); batch size 1;
one step per demonstration, in demonstration order; the loss is the mean token-level
causal-LM loss over the whole formatted demonstration; dropout off (``model.eval()``).

``objective="lcgd"`` is Deutch et al.'s layer-causal GD instead (definitions §12.1): every decoder
layer's output goes through the frozen final norm and unembedding (``Architecture.logit_lens``),
the per-layer mean token losses are summed, and every layer's hidden-state input is detached, so
layer l's K/V gradient comes from layer l's own loss given its (fixed) input, never from later
layers. As in their code (``fs_ft.py``/``gpt.py``: ``x.detach()``, per-layer losses summed,
the last layer included). Everything else is the same FT.

The update is applied to fp32 master copies of the K/V parameters and written back, so a
bf16/fp16 model does not round most of the update away (docs/departures.md, item 1: a bf16 SGD step
changes 0.3 % of the entries at lr 1e-3). Departure from the official code, which kept fp16
weights for evaluation. Each master copy lives on its parameter's device, and the training
tokens go to the input embedding's device, so a model split over devices (``device_map``)
trains in place.

The original weights are restored when the ``finetuned`` block ends: only the K/V parameters
(a few MiB) are copied, never the whole model.

During each step the queries of every demonstration token are recorded (definitions §7: taken in
that step's forward pass, with the K/V weights left by the earlier steps), for Kendall.

Example::

    with finetuned(model, capture, encoded.demo_sequences, lr=1e-2, objective="lcgd") as ft:
        ...  # the model is the FT model here
    ft.train_queries   # [layers, training tokens, query dim]
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pytest_icl.models.placement import input_device

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    import torch
    from torch import nn

    from pytest_icl.engine.capture import AttentionCapture
    from pytest_icl.models.architectures import Architecture

OBJECTIVES = ("gd", "lcgd")


@dataclass
class FinetuneResult:
    train_queries: torch.Tensor | None = None  # [L, N, D]
    losses: list[float] = field(default_factory=list)  # the objective each step minimised (lcgd: the per-layer sum)


class LayerCausalLoss:
    """Deutch's LCGD objective: Σ_l mean-token CE(lens(h_l)), each layer's input detached.

    Hooks every decoder layer while it exists (``remove`` takes them off). All layers' logits
    stay alive until the backward pass: memory L × tokens × vocabulary floats per step.
    """

    def __init__(self, model: nn.Module, architecture: Architecture):
        self.model = model
        self.lens = architecture.logit_lens(model)
        self._outputs: list[torch.Tensor] | None = None
        self._handles = []
        for layer in architecture.layers(model):
            self._handles.append(layer.register_forward_pre_hook(self._detach_input, with_kwargs=True))
            self._handles.append(layer.register_forward_hook(self._keep_output))
        self._architecture = architecture

    def _detach_input(self, module, args, kwargs):
        if self._outputs is None:
            return None
        return self._architecture.detach_hidden_input(args, kwargs)

    def _keep_output(self, module, args, output) -> None:
        if self._outputs is not None:
            self._outputs.append(self._architecture.hidden_output(output))

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        import torch

        self._outputs = []
        try:
            # The model's own logits are not needed (the lens recomputes the last layer's): keep one.
            self.model(input_ids=ids, logits_to_keep=1)
            outputs = self._outputs
        finally:
            self._outputs = None
        total = None
        for hidden in outputs:
            logits = self.lens(hidden)[0, :-1].float()
            loss = torch.nn.functional.cross_entropy(logits, ids[0, 1:].to(logits.device))
            total = loss if total is None else total + loss.to(total.device)
        return total

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


@contextmanager
def finetuned(
    model: nn.Module,
    capture: AttentionCapture,
    sequences: Sequence[Sequence[int]],
    *,
    lr: float,
    demo_offset: int = 0,
    on_step: Callable[[int], None] | None = None,
    objective: str = "gd",
) -> Iterator[FinetuneResult]:
    import torch

    if objective not in OBJECTIVES:
        raise ValueError(f"unknown FT objective {objective!r}: use 'gd' (Dai et al.) or 'lcgd' (Deutch et al.'s layer-causal GD)")
    parts = capture.architecture.kv_parts(model)
    kv_ids = {id(part.param) for part in parts}
    saved = [part.param.detach().clone() for part in parts]
    masters = [part.param.detach().float().clone() for part in parts]  # on each parameter's own device
    requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
    was_training = model.training
    result = FinetuneResult()
    device = input_device(model)
    layer_causal = LayerCausalLoss(model, capture.architecture) if objective == "lcgd" else None
    try:
        model.eval()
        for param in model.parameters():
            param.requires_grad_(id(param) in kv_ids)
        per_layer: list[list[torch.Tensor]] = [[] for _ in range(capture.num_layers)]
        for step, sequence in enumerate(sequences):
            ids = torch.tensor([list(sequence)], device=device)
            with capture.recording([0], [0], queries="all", scores=False) as record:
                if layer_causal is None:
                    loss = model(input_ids=ids, labels=ids).loss  # mean NLL over the sequence's predicted tokens
                else:
                    loss = layer_causal(ids)
            grads = torch.autograd.grad(loss, [part.param for part in parts])
            with torch.no_grad():
                for part, master, grad in zip(parts, masters, grads):
                    update = grad.float() * lr
                    if part.mask is not None:
                        update = update * part.mask.to(update.device)
                    master -= update.to(master.device)
                    part.param.copy_(master)
            for layer, queries in record.queries.items():
                per_layer[layer].append(queries[demo_offset:])
            result.losses.append(loss.item())
            if on_step is not None:
                on_step(step)
        result.train_queries = torch.stack([torch.cat(q) for q in per_layer]) if sequences else None
        yield result
    finally:
        if layer_causal is not None:
            layer_causal.remove()
        with torch.no_grad():
            for part, original in zip(parts, saved):
                part.param.copy_(original)
        for name, param in model.named_parameters():
            param.requires_grad_(requires_grad[name])
        model.train(was_training)
