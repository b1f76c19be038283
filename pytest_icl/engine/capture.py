"""Record what each attention layer computes at the analysed positions.

Dai et al. read three things per layer at one position of each eval example (definitions §7):

* the attention module's output after its output projection, before the residual add;
* the pre-softmax attention scores of every head from that position to every key, exactly
  as the model computes them (its own scaling and soft-capping; masked keys, e.g. outside a
  local layer's window, are recorded as 0, the value the official code pads with);
* the (scaled) query vector, and during each FT step the queries of every demonstration token.

How: the output comes from a forward hook on each attention module. Scores and queries come
from inside the attention computation. For architectures that call transformers'
attention-function registry we register an attention implementation, ``"icl_capture"``, that
runs the model's own eager attention and records on the side — no model code is patched. GPT-Neo
and GPT-J compute attention in their own ``_attn`` method, which we wrap on each module instance
(and unwrap on ``remove``). XGLM (the paper's fairseq dense models) computes attention inline in
its ``forward``: forward hooks on its query and key projections give the new tokens' queries and
keys, and after the module ran, its layer of the key/value cache holds every key it attended to.

Only the requested rows and positions are kept, never full hidden states, so a record costs
O(layers × heads × keys) per eval example.

Example::

    capture = AttentionCapture(model)
    with capture.recording(rows=[0, 1], positions=[5, 7]) as record:
        model(input_ids)
    record.outputs[layer]   # [2, hidden]
    record.scores[layer]    # [2, heads, keys]
    capture.remove()
"""

from __future__ import annotations

import functools
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from pytest_icl.models.architectures import architecture_of

if TYPE_CHECKING:
    from collections.abc import Iterator

    import torch
    from torch import nn

CAPTURE_IMPLEMENTATION = "icl_capture"

QueryMode = Literal["none", "at_positions", "all"]


@dataclass
class Record:
    """What one forward pass left behind, per layer index."""

    outputs: dict[int, torch.Tensor] = field(default_factory=dict)
    scores: dict[int, torch.Tensor] = field(default_factory=dict)
    queries: dict[int, torch.Tensor] = field(default_factory=dict)


@dataclass
class _Request:
    rows: torch.Tensor
    positions: torch.Tensor
    queries: QueryMode
    scores: bool
    record: Record


def _register_capture_implementation() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

    if CAPTURE_IMPLEMENTATION in AttentionInterface._global_mapping:
        return
    AttentionInterface.register(CAPTURE_IMPLEMENTATION, _capturing_attention)
    # The capture needs the same dense additive mask eager attention gets (it carries
    # padding, causality and sliding windows), so register eager's mask builder too.
    ALL_MASK_ATTENTION_FUNCTIONS.register(CAPTURE_IMPLEMENTATION, eager_mask)


def _model_eager_attention(module: nn.Module):
    """The eager attention function of the module's own modeling file (falls back to Llama's)."""
    modeling = sys.modules[type(module).__module__]
    function = getattr(modeling, "eager_attention_forward", None)
    if function is None:
        from transformers.models.llama.modeling_llama import eager_attention_forward as function
    return function


def _capturing_attention(module, query, key, value, attention_mask, **kwargs):
    result = _model_eager_attention(module)(module, query, key, value, attention_mask, **kwargs)
    capture: AttentionCapture | None = getattr(module, "_icl_capture", None)
    if capture is not None and capture._request is not None:
        scaling = kwargs.get("scaling")
        if scaling is None:
            scaling = query.shape[-1] ** -0.5
        capture._on_attention(module, query, key, attention_mask, scaling, kwargs.get("softcap"))
    return result


def _visible(additive_mask: torch.Tensor | None, shape) -> torch.Tensor:
    import torch

    if additive_mask is None:
        return torch.ones(shape, dtype=torch.bool)
    if additive_mask.dtype == torch.bool:
        return additive_mask
    # eager masks hold 0 where a key is visible and the dtype's minimum where it is not
    return additive_mask > torch.finfo(additive_mask.dtype).min / 2


class AttentionCapture:
    """Attach to a model once; record only inside ``recording(...)``."""

    def __init__(self, model: nn.Module):
        import torch  # noqa: F401  (fail early if torch is missing)

        self.model = model
        self.architecture = architecture_of(model)
        self.modules = self.architecture.attention_modules(model)
        self.num_layers = len(self.modules)
        self._request: _Request | None = None
        self._handles = []
        self._previous_implementation = None
        for index, module in enumerate(self.modules):
            module._icl_capture = self
            module._icl_layer = index
            self._handles.append(module.register_forward_hook(self._on_output))
        kind = self.architecture.attention_kind
        if kind == "registry":
            _register_capture_implementation()
            self._previous_implementation = model.config._attn_implementation
            model.set_attn_implementation(CAPTURE_IMPLEMENTATION)
        elif kind == "method":
            for module in self.modules:
                module._attn = self._wrap_method(module, module._attn)
        else:  # "hooks"
            for module in self.modules:
                for name in ("q_proj", "k_proj"):
                    hook = functools.partial(self._on_projection, module, f"_icl_{name}")
                    self._handles.append(getattr(module, name).register_forward_hook(hook))
                self._handles.append(module.register_forward_hook(self._on_inline_attention, with_kwargs=True))

    # ---- public API

    @contextmanager
    def recording(
        self,
        rows,
        positions,
        *,
        queries: QueryMode = "none",
        scores: bool = True,
    ) -> Iterator[Record]:
        """Record at ``positions[j]`` (index into this forward's tokens) of batch row ``rows[j]``.

        ``queries="all"`` records the queries of every token of batch row ``rows[0]`` (the FT
        training step of definitions §7).
        """
        import torch

        record = Record()
        self._request = _Request(
            rows=torch.as_tensor(rows, dtype=torch.long),
            positions=torch.as_tensor(positions, dtype=torch.long),
            queries=queries,
            scores=scores,
            record=record,
        )
        try:
            yield record
        finally:
            self._request = None

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for module in self.modules:
            del module._icl_capture
            del module._icl_layer
            for name in ("_icl_q_proj", "_icl_k_proj"):
                vars(module).pop(name, None)
            if "_attn" in vars(module):
                del module._attn  # back to the class's own method
        if self._previous_implementation is not None:
            self.model.set_attn_implementation(self._previous_implementation)

    # ---- hooks

    def _on_output(self, module, args, output) -> None:
        request = self._request
        if request is None:
            return
        hidden = output[0] if isinstance(output, tuple) else output
        rows, positions = self._rows_positions(hidden.device)
        request.record.outputs[module._icl_layer] = hidden[rows, positions].detach().float().cpu()

    def _on_attention(self, module, query, key, attention_mask, scaling, softcap=None) -> None:
        import torch

        request = self._request
        rows, positions = self._rows_positions(query.device)
        layer = module._icl_layer
        heads, head_dim = query.shape[1], query.shape[-1]
        if request.queries == "all":
            # [T, H*D]: every token's scaled query of the (single) training sequence
            q_all = query[rows[0]].transpose(0, 1).reshape(query.shape[2], heads * head_dim)
            request.record.queries[layer] = (q_all * scaling).detach().float().cpu()
        q = query[rows, :, positions]  # [R, H, D]
        if request.queries == "at_positions":
            request.record.queries[layer] = (q * scaling).reshape(len(rows), -1).detach().float().cpu()
        if not request.scores:
            return
        k = key[rows]  # [R, KV, S, D]
        groups = heads // k.shape[1]
        if groups > 1:
            k = k.repeat_interleave(groups, dim=1)
        scores = torch.einsum("rhd,rhsd->rhs", q.float(), k.float()) * scaling
        if softcap is not None:
            scores = torch.tanh(scores / softcap) * softcap
        if attention_mask is not None:
            mask = attention_mask[rows, :, positions, : scores.shape[-1]]  # [R, 1 or H, S]
            scores = scores.masked_fill(~_visible(mask, mask.shape), 0.0)
        request.record.scores[layer] = scores.detach().cpu()

    def _on_projection(self, module, name: str, projection, args, output) -> None:
        if self._request is not None:
            setattr(module, name, output)

    def _on_inline_attention(self, module, args, kwargs, output) -> None:
        """XGLM: rebuild what its inline attention multiplied, from the projections and the cache."""
        if self._request is None:
            return
        batch, length, _ = module._icl_q_proj.shape
        heads, head_dim = module.num_heads, module.head_dim
        query = module._icl_q_proj.view(batch, length, heads, head_dim).transpose(1, 2)  # unscaled, like registry queries
        cache = kwargs.get("past_key_values")
        cache = getattr(cache, "self_attention_cache", cache)  # an EncoderDecoderCache wraps the one we want
        if cache is not None and len(cache.layers) > module.layer_idx:
            key = cache.layers[module.layer_idx].keys  # prefix keys + this forward's, already updated
        else:
            key = module._icl_k_proj.view(batch, length, -1, head_dim).transpose(1, 2)
        del module._icl_q_proj, module._icl_k_proj  # keep no activations (or autograd graph) alive
        self._on_attention(module, query, key, kwargs.get("attention_mask"), module.scaling)

    def _wrap_method(self, module, original):
        """Wrap GPT-Neo/GPT-J ``_attn(query, key, value, attention_mask)``."""
        import torch

        def _attn(query, key, value, attention_mask=None, *args, **kwargs):
            if self._request is not None:
                # GPT-Neo applies no 1/sqrt(d) scaling; GPT-J divides by sqrt(head_dim).
                scale_attn = getattr(module, "scale_attn", None)
                scaling = 1.0 / float(scale_attn) if scale_attn is not None else 1.0
                mask = None
                query_length, key_length = query.shape[-2], key.shape[-2]
                bias = getattr(module, "bias", None)
                if bias is not None and bias.dtype == torch.bool:
                    # GPT-Neo keeps causality and the local window in a bool buffer.
                    window = bias[:, :, key_length - query_length : key_length, :key_length]
                    mask = window.expand(query.shape[0], 1, query_length, key_length)
                if attention_mask is not None:
                    visible = _visible(attention_mask, attention_mask.shape)
                    mask = visible if mask is None else mask & visible
                if mask is not None:
                    mask = torch.where(mask, 0.0, torch.finfo(torch.float32).min)
                self._on_attention(module, query, key, mask, scaling)
            return original(query, key, value, attention_mask, *args, **kwargs)

        return _attn

    def _rows_positions(self, device):
        request = self._request
        return request.rows.to(device), request.positions.to(device)
