"""``untrained``: ZSL, ICL and FT on models that never learned (Deutch et al. 2024, definitions §12.1.3, definitions §12.4.5).

The same architecture with re-initialised weights (Deutch's "No Training") and with only the
embeddings, norms and unembedding of the trained model ("Trained Embeddings"). The similarity
of a model that has no ICL is what the metric gives for nothing; the trained model must beat
both (the checks are the catalogue row's).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from pytest_icl import catalogue
from pytest_icl.controls.base import Control

if TYPE_CHECKING:
    from torch import nn

UNTRAINED_MODES = tuple(v.name for v in catalogue.control("untrained").variants)  # no_training, trained_embeddings


def trained_embedding_names(model: nn.Module) -> list[str]:
    """Parameters "Trained Embeddings" keeps: input and positional embeddings, every norm, the unembedding.

    As Deutch's code (``model_trained=0`` loads embeddings, LayerNorms and the output projection).
    Norms are found by type (``nn.LayerNorm`` or a class named ``*Norm``: RMSNorm variants),
    so Gemma 3's per-head q/k norms count as norms too. Tied weights appear once.
    """
    from torch import nn

    keep: list[str] = []
    output = model.get_output_embeddings()
    for module_name, module in model.named_modules():
        is_norm = isinstance(module, nn.LayerNorm) or type(module).__name__.endswith("Norm")
        if isinstance(module, nn.Embedding) or is_norm or module is output:
            prefix = f"{module_name}." if module_name else ""
            keep.extend(prefix + name for name, _ in module.named_parameters(recurse=False))
    names = {name for name, _ in model.named_parameters()}  # drops tied duplicates
    return [name for name in dict.fromkeys(keep) if name in names]


def untrained_model(model: nn.Module, mode: str, seed: int = 0) -> nn.Module:
    """A new model of ``model``'s architecture and config with freshly initialised weights.

    ``mode="no_training"``: every weight from the architecture's own initialisation, seeded
    (the global RNG is left as it was). ``"trained_embeddings"``: the same, then the tensors of
    :func:`trained_embedding_names` copied from ``model``. Eager attention, eval mode, the
    model's dtype and placement (a ``device_map``-split model is dispatched the same way). It
    costs a second copy of the model in memory.
    """
    import torch
    from transformers import AutoModelForCausalLM

    if mode not in UNTRAINED_MODES:
        raise ValueError(f"unknown untrained-model mode {mode!r}: use one of {', '.join(UNTRAINED_MODES)}")
    config = copy.deepcopy(model.config)
    dtype = next(model.parameters()).dtype
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=dtype)
    if mode == "trained_embeddings":
        trained = dict(model.named_parameters())
        params = dict(fresh.named_parameters())
        with torch.no_grad():
            for name in trained_embedding_names(model):
                params[name].copy_(trained[name].detach().to(params[name].device))
    device_map = getattr(model, "hf_device_map", None)
    if device_map and len(set(device_map.values())) > 1:
        from accelerate import dispatch_model

        fresh = dispatch_model(fresh, device_map=device_map)
    else:
        fresh = fresh.to(next(model.parameters()).device)
    return fresh.eval()


class Untrained(Control):
    def variant_draws(self, model, tokenizer, tasks, draws, *, seed, common):
        """One untrained model per mode (seeded with the pair's seed), run beside every draw; its ZSL once."""
        from pytest_icl.engine import runs

        def run(mode: str) -> list:
            control_model = untrained_model(model, mode, seed=seed)
            try:
                made = []
                for task in tasks:  # ZSL sees no demonstration: scored once, as for the real model
                    made.append(runs.run_settings(control_model, tokenizer, task, zsl=made[0].zsl if made else None, **common))
                return made
            finally:
                del control_model

        return {mode: (lambda mode=mode: run(mode)) for mode in UNTRAINED_MODES}


CONTROL = Untrained("untrained")
