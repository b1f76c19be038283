"""Where each architecture keeps its attention modules and its key/value projections.

Dai et al. finetune only the attention keys and values, and read each layer's attention
output and scores. Hugging Face models name these parts differently, and some fuse Q, K
and V into one matrix, so one small table says, per ``model_type``:

* where the decoder layers' attention modules are (``attention_modules``);
* which entries of which parameters are the key and value projections (``kv_parts``);
* how attention is computed: through transformers' attention-function registry
  (``"registry"``: Llama, Gemma 3, Qwen2, GPT-2, OPT, GPT-NeoX), through the module's own
  ``_attn`` method (``"method"``: GPT-Neo, GPT-J), which capture wraps per instance, or inline in
  the module's ``forward`` (``"hooks"``: XGLM), which capture reads through forward hooks;
* what lies between the last decoder layer and the unembedding (``final_norm``: the final norm,
  and OPT's ``project_out``), so that layer-causal FT (Deutch et al.) can read any layer's
  output through the frozen head (``logit_lens``), and how a decoder layer receives and returns
  its hidden states (``detach_hidden_input``, ``hidden_output``).

Adding an architecture is one entry in ``_ARCHITECTURES``.

Example::

    arch = architecture_of(model)
    modules = arch.attention_modules(model)      # one per layer
    parts = arch.kv_parts(model)                 # what FT may change
    logits = arch.logit_lens(model)(hidden)      # any layer's output through the final norm + unembedding
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pytest_icl.errors import (
    UnsupportedArchitecture,  # noqa: F401 - defined in errors, used or re-exported here
)

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class KVPart:
    """A trainable key/value projection parameter, or the K/V entries of a fused one.

    ``mask`` is None when the whole parameter is a K or V projection, else a bool tensor of
    the parameter's shape that is True on its K and V entries (fused QKV matrices).
    """

    name: str
    param: torch.nn.Parameter
    mask: torch.Tensor | None = None


@dataclass(frozen=True)
class Architecture:
    model_type: str
    layers: Callable[[nn.Module], list[nn.Module]]
    attention_of: Callable[[nn.Module], nn.Module]
    kv_parameter_names: tuple[str, ...]
    attention_kind: Literal["registry", "method", "hooks"]
    fused_kv_mask: Callable[[nn.Module, str, torch.Tensor], torch.Tensor] | None = None
    # Paths (from the model) of the modules the last decoder layer's output passes through before
    # the unembedding, in order; a path whose module is None or absent is skipped (OPT builds
    # final_layer_norm and project_out only for some configs).
    final_norm: tuple[str, ...] = ()

    def attention_modules(self, model: nn.Module) -> list[nn.Module]:
        return [self.attention_of(layer) for layer in self.layers(model)]

    def kv_parts(self, model: nn.Module) -> list[KVPart]:
        """Every layer's key and value projection weights and biases, in layer order."""
        parts = []
        for i, attention in enumerate(self.attention_modules(model)):
            for local_name, param in attention.named_parameters():
                if local_name not in self.kv_parameter_names:
                    continue
                mask = self.fused_kv_mask(attention, local_name, param) if self.fused_kv_mask else None
                parts.append(KVPart(f"layer{i}.{local_name}", param, mask))
        if not parts:
            raise UnsupportedArchitecture(f"found no key/value projections in {self.model_type}")
        return parts

    def logit_lens(self, model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        """hidden [.., d] -> logits [.., V]: the frozen final norm(s), the unembedding, and the
        final logit soft-capping where the model has one (Gemma 3), exactly as the model maps its
        last layer's output. Each module runs on its own device (models split by ``device_map``).
        """
        modules = [m for m in (_optional_attr(model, path) for path in self.final_norm) if m is not None]
        modules.append(model.get_output_embeddings())
        softcap = getattr(model.config, "final_logit_softcapping", None)

        def lens(hidden: torch.Tensor) -> torch.Tensor:
            import torch

            for module in modules:
                hidden = module(hidden.to(_device_of(module, hidden)))
            if softcap is not None:
                hidden = torch.tanh(hidden / softcap) * softcap
            return hidden

        return lens

    @staticmethod
    def detach_hidden_input(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """A decoder layer's call with its hidden-state input detached (stop-gradient).

        Every supported decoder layer takes the hidden states as its first positional argument
        (checked in transformers 5 for each entry of the table); a keyword ``hidden_states`` is
        handled too.
        """
        if args:
            return (args[0].detach(), *args[1:]), kwargs
        if "hidden_states" in kwargs:
            return args, {**kwargs, "hidden_states": kwargs["hidden_states"].detach()}
        raise UnsupportedArchitecture("a decoder layer was called without hidden states to detach")

    @staticmethod
    def hidden_output(output) -> torch.Tensor:
        """A decoder layer's output hidden states (GPT-Neo and GPT-J return a tuple)."""
        return output[0] if isinstance(output, tuple) else output


def _optional_attr(model: nn.Module, path: str):
    obj = model
    for attr in path.split("."):
        obj = getattr(obj, attr, None)
        if obj is None:
            return None
    return obj


def _device_of(module: nn.Module, fallback: torch.Tensor):
    for param in module.parameters():
        return param.device
    return fallback.device


def _gpt2_kv_mask(attention: nn.Module, name: str, param: torch.Tensor) -> torch.Tensor:
    # GPT-2's c_attn is a Conv1D with weight [in, 3*E] (Q | K | V along the last axis).
    import torch

    mask = torch.zeros_like(param, dtype=torch.bool)
    embed = attention.embed_dim
    mask[..., embed:] = True
    return mask


def _neox_kv_mask(attention: nn.Module, name: str, param: torch.Tensor) -> torch.Tensor:
    # GPT-NeoX's query_key_value Linear has out-features laid out per head as [q | k | v].
    import torch

    head_dim = attention.head_size
    out_features = param.shape[0]
    role = (torch.arange(out_features) // head_dim) % 3  # 0 = q, 1 = k, 2 = v
    keep = role > 0
    return keep.view(-1, *([1] * (param.dim() - 1))).expand_as(param).clone()


def _decoder_layers(path: str) -> Callable[[nn.Module], list[nn.Module]]:
    def layers(model: nn.Module) -> list[nn.Module]:
        obj = model
        for attr in path.split("."):
            obj = getattr(obj, attr)
        return list(obj)

    return layers


def _attr(path: str) -> Callable[[nn.Module], nn.Module]:
    def get(layer: nn.Module) -> nn.Module:
        obj = layer
        for attr in path.split("."):
            obj = getattr(obj, attr)
        return obj

    return get


_KV = ("k_proj.weight", "k_proj.bias", "v_proj.weight", "v_proj.bias")

_LLAMA_HEAD = ("model.norm",)
_GPT_HEAD = ("transformer.ln_f",)

_ARCHITECTURES = {
    arch.model_type: arch
    for arch in (
        Architecture("llama", _decoder_layers("model.layers"), _attr("self_attn"), _KV, "registry", final_norm=_LLAMA_HEAD),
        Architecture("qwen2", _decoder_layers("model.layers"), _attr("self_attn"), _KV, "registry", final_norm=_LLAMA_HEAD),
        Architecture("gemma3_text", _decoder_layers("model.layers"), _attr("self_attn"), _KV, "registry", final_norm=_LLAMA_HEAD),
        Architecture(
            "opt",
            _decoder_layers("model.decoder.layers"),
            _attr("self_attn"),
            _KV,
            "registry",
            final_norm=("model.decoder.final_layer_norm", "model.decoder.project_out"),
        ),
        Architecture(
            "gpt2",
            _decoder_layers("transformer.h"),
            _attr("attn"),
            ("c_attn.weight", "c_attn.bias"),
            "registry",
            _gpt2_kv_mask,
            final_norm=_GPT_HEAD,
        ),
        Architecture(
            "gpt_neox",
            _decoder_layers("gpt_neox.layers"),
            _attr("attention"),
            ("query_key_value.weight", "query_key_value.bias"),
            "registry",
            _neox_kv_mask,
            final_norm=("gpt_neox.final_layer_norm",),
        ),
        Architecture("gpt_neo", _decoder_layers("transformer.h"), _attr("attn.attention"), _KV, "method", final_norm=_GPT_HEAD),
        Architecture("gptj", _decoder_layers("transformer.h"), _attr("attn"), _KV, "method", final_norm=_GPT_HEAD),
        # XGLM: the HF conversion of Dai et al.'s fairseq dense models (fairseq-dense-1.3B/2.7B).
        Architecture("xglm", _decoder_layers("model.layers"), _attr("self_attn"), _KV, "hooks", final_norm=("model.layer_norm",)),
    )
}
_ARCHITECTURES["gemma3"] = _ARCHITECTURES["gemma3_text"]


def architecture_of(model: nn.Module) -> Architecture:
    model_type = model.config.model_type
    try:
        return _ARCHITECTURES[model_type]
    except KeyError:
        supported = ", ".join(sorted(_ARCHITECTURES))
        raise UnsupportedArchitecture(
            f"pytest-icl does not know where '{model_type}' keeps its attention keys and values. "
            f"Supported: {supported}. Adding one is an entry in pytest_icl/architectures.py."
        ) from None
