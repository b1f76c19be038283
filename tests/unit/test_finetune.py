"""FT objectives: Dai's GD and Deutch's layer-causal GD (LCGD), and FT on a model split over devices.

Exact checks that pin LCGD (definitions §12.1) without re-implementing it:

* the logit lens of the last layer is the model's own head, on every architecture;
* the last layer has no later layers, so its LCGD update equals its GD update, while earlier
  layers' updates differ (GD sends them gradient from later layers);
* on a one-layer model LCGD and GD are the same objective, so every update is equal;
* changing the weights of layers > l leaves layer l's LCGD update unchanged (and GD's changed).
"""

from __future__ import annotations

import copy

import pytest
import torch

from pytest_icl.engine.capture import AttentionCapture
from pytest_icl.engine.finetune import finetuned
from pytest_icl.models.architectures import architecture_of
from tests.tiny_models import ARCHS, make_tiny_model, save_tiny_model

SEQUENCE = "Word: hot\nAntonym: cold"


def _ids(tokenizer) -> list[list[int]]:
    return [[tokenizer.bos_token_id, *tokenizer(SEQUENCE)["input_ids"]]]


def _updates(model, sequences, objective: str, lr: float = 0.5) -> list[torch.Tensor]:
    """Each K/V part's update (new - old) after FT on ``sequences``, in kv_parts order."""
    parts = architecture_of(model).kv_parts(model)
    before = [part.param.detach().clone() for part in parts]
    capture = AttentionCapture(model)
    try:
        with finetuned(model, capture, sequences, lr=lr, objective=objective):
            return [part.param.detach() - old for part, old in zip(parts, before)]
    finally:
        capture.remove()


def _layer_of(name: str) -> int:
    return int(name.split(".")[0].removeprefix("layer"))


@pytest.mark.parametrize("arch", ARCHS)
def test_lcgd_per_architecture_lens_is_the_head_and_the_last_layer_trains_as_in_gd(arch):
    model, tokenizer = make_tiny_model(arch)
    arch_info = architecture_of(model)
    kept = []
    handle = arch_info.layers(model)[-1].register_forward_hook(lambda m, a, out: kept.append(arch_info.hidden_output(out)))
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(_ids(tokenizer))).logits
    handle.remove()
    with torch.no_grad():
        torch.testing.assert_close(arch_info.logit_lens(model)(kept[0]), logits)

    names = [part.name for part in arch_info.kv_parts(model)]
    last = max(_layer_of(n) for n in names)
    gd = _updates(model, _ids(tokenizer), "gd")
    lcgd = _updates(model, _ids(tokenizer), "lcgd")
    for name, a, b in zip(names, gd, lcgd):
        if _layer_of(name) == last:
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)
    earlier = [(a, b) for name, a, b in zip(names, gd, lcgd) if _layer_of(name) < last and a.abs().max() > 0]
    assert earlier and not all(torch.allclose(a, b, rtol=1e-3, atol=1e-7) for a, b in earlier)


def test_lcgd_on_a_one_layer_model_is_gd():
    model, tokenizer = make_tiny_model("llama")
    model.model.layers = torch.nn.ModuleList(list(model.model.layers)[:1])
    model.config.num_hidden_layers = 1
    gd = _updates(model, _ids(tokenizer), "gd")
    lcgd = _updates(model, _ids(tokenizer), "lcgd")
    assert len(gd) == 2 and all(a.abs().max() > 0 for a in gd)  # k_proj and v_proj weights (no biases)
    for a, b in zip(gd, lcgd):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt_neo"])
def test_lcgd_update_of_layer_l_ignores_layers_after_l(arch):
    model, tokenizer = make_tiny_model(arch)
    arch_info = architecture_of(model)
    names = [part.name for part in arch_info.kv_parts(model)]
    layers = arch_info.layers(model)
    for index in range(len(layers) - 1):
        changed = copy.deepcopy(model)
        g = torch.Generator().manual_seed(index)
        with torch.no_grad():
            for layer in arch_info.layers(changed)[index + 1 :]:
                for p in layer.parameters():
                    p.add_(torch.randn(p.shape, generator=g) * 0.5)
        for objective, same in (("lcgd", True), ("gd", False)):
            a = _updates(model, _ids(tokenizer), objective)
            b = _updates(changed, _ids(tokenizer), objective)
            upto_l = [(x, y) for name, x, y in zip(names, a, b) if _layer_of(name) <= index]
            equal = all(torch.equal(x, y) for x, y in upto_l)
            assert equal == same, f"{objective}: layer <= {index} updates {'differ' if same else 'are unchanged'}"


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox", "xglm"])
def test_lcgd_changes_only_keys_and_values_and_restores_everything(arch):
    model, tokenizer = make_tiny_model(arch)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    kv = architecture_of(model).kv_parts(model)
    kv_names = {n for n, p in model.named_parameters() if any(p is part.param for part in kv)}
    capture = AttentionCapture(model)
    with finetuned(model, capture, _ids(tokenizer) * 2, lr=0.05, objective="lcgd") as result:
        changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
        for part in kv:
            if part.mask is not None:  # fused QKV: the query entries stay as they were
                name = next(n for n, p in model.named_parameters() if p is part.param)
                delta = part.param.detach() - before[name]
                assert torch.all(delta[~part.mask] == 0) and torch.any(delta[part.mask] != 0)
    capture.remove()
    assert changed and changed <= kv_names
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in architecture_of(model).layers(model))
    assert len(result.losses) == 2 and result.losses[1] < result.losses[0]  # the summed objective went down


def test_unknown_objective_says_which_exist():
    model, tokenizer = make_tiny_model("gpt2")
    capture = AttentionCapture(model)
    with pytest.raises(ValueError, match="'gd'.*'lcgd'"):
        with finetuned(model, capture, _ids(tokenizer), lr=0.1, objective="adam"):
            pass
    capture.remove()


def _splits() -> list[dict[str, str]]:
    cpu = {
        "model.embed_tokens": "cpu",
        "model.layers.0": "cpu",
        "model.layers.1": "cpu",
        "model.norm": "cpu",
        "model.rotary_emb": "cpu",
        "lm_head": "cpu",
    }
    splits = [cpu]
    if torch.cuda.is_available():  # the real thing: the input embedding and layer 0 on the GPU, the rest on the CPU
        splits.append({**cpu, "model.embed_tokens": "cuda:0", "model.layers.0": "cuda:0"})
    return splits


@pytest.mark.parametrize("device_map", _splits(), ids=lambda m: "+".join(sorted(set(m.values()))))
@pytest.mark.parametrize("objective", ["gd", "lcgd"])
def test_ft_on_a_model_split_over_devices_matches_the_whole_model(tmp_path, device_map, objective):
    from transformers import AutoModelForCausalLM

    folder = save_tiny_model("llama", tmp_path / "llama")
    whole, tokenizer = make_tiny_model("llama")
    split = AutoModelForCausalLM.from_pretrained(folder, device_map=device_map, attn_implementation="eager", dtype=torch.float32)
    split.eval()
    expected = _updates(whole, _ids(tokenizer) * 2, objective)
    parts = architecture_of(split).kv_parts(split)
    got = _updates(split, _ids(tokenizer) * 2, objective)
    for part, a, b in zip(parts, expected, got):
        assert b.device == part.param.device  # master copies and updates stay on each parameter's device
        torch.testing.assert_close(b.cpu(), a, rtol=1e-4, atol=1e-6)
