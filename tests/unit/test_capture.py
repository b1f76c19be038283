"""Capture records what each architecture really computes.

Checked against an independent recomputation: transformers' own eager attention probabilities
(``output_attentions=True``) must equal a softmax over the recorded pre-softmax scores of the
keys the layer can see, and the recorded attention outputs must equal the attention modules'
outputs read with a plain forward hook.
"""

import pytest
import torch

from pytest_icl.engine.capture import AttentionCapture
from pytest_icl.models.architectures import UnsupportedArchitecture, architecture_of
from tests.tiny_models import ARCHS, GEMMA3_WINDOW, GPT_NEO_WINDOW, make_tiny_model

ROWS, POSITIONS = [0, 1, 1], [11, 4, 11]


def _reference(model, ids):
    outputs = {}
    modules = architecture_of(model).attention_modules(model)
    handles = [m.register_forward_hook(lambda mod, args, out, i=i: outputs.__setitem__(i, out[0].detach())) for i, m in enumerate(modules)]
    with torch.no_grad():
        result = model(ids, output_attentions=True)
    for handle in handles:
        handle.remove()
    return result, outputs


@pytest.mark.parametrize("arch", ARCHS)
def test_recorded_scores_and_outputs_match_eager_attention(arch):
    model, _ = make_tiny_model(arch)
    ids = torch.randint(5, 400, (2, 12), generator=torch.Generator().manual_seed(1))
    reference, outputs = _reference(model, ids)
    capture = AttentionCapture(model)
    with torch.no_grad(), capture.recording(ROWS, POSITIONS) as record:
        logits = model(ids).logits
    capture.remove()
    assert torch.equal(logits, reference.logits)  # capturing changes nothing
    for layer, attentions in enumerate(reference.attentions):
        for j, (row, pos) in enumerate(zip(ROWS, POSITIONS)):
            probs = attentions[row, :, pos]  # [H, S]
            scores = record.scores[layer][j]
            visible = probs > 0
            recomputed = scores.masked_fill(~visible, float("-inf")).softmax(-1)
            torch.testing.assert_close(recomputed, probs, atol=1e-6, rtol=1e-5)
            assert torch.all(scores[~visible] == 0)  # unseen keys are recorded as 0
            torch.testing.assert_close(record.outputs[layer][j], outputs[layer][row, pos])


@pytest.mark.parametrize(
    ("arch", "window", "local_layer", "global_layer"), [("gpt_neo", GPT_NEO_WINDOW, 1, 0), ("gemma3", GEMMA3_WINDOW, 0, 2)]
)
def test_local_layers_record_only_their_window(arch, window, local_layer, global_layer):
    model, _ = make_tiny_model(arch)
    capture = AttentionCapture(model)
    with torch.no_grad(), capture.recording([0], [11]) as record:
        model(torch.arange(10, 22)[None])
    capture.remove()
    nonzero = (record.scores[local_layer][0] != 0).sum(-1)
    assert torch.all(nonzero <= window)
    assert torch.all((record.scores[global_layer][0] != 0).sum(-1) == 12)  # the global layer sees every key


@pytest.mark.parametrize("arch", ["llama", "xglm"])  # registry and hooks capture
def test_queries_at_positions_are_scaled_queries(arch):
    model, _ = make_tiny_model(arch)
    attention = model.model.layers[0].self_attn
    ids = torch.arange(10, 20)[None]
    capture = AttentionCapture(model)
    with torch.no_grad(), capture.recording([0], [9], queries="at_positions") as record:
        model(ids)
    with torch.no_grad(), capture.recording([0], [0], queries="all", scores=False) as all_record:
        model(ids)
    capture.remove()
    q = record.queries[0][0]
    assert q.shape == (attention.q_proj.out_features,)
    # scaled as the model scales it: q_proj(h) / sqrt(head_dim) (no rotary embedding in layer 0 of XGLM)
    if arch == "xglm":
        hidden = {}
        handle = attention.register_forward_pre_hook(lambda m, args: hidden.setdefault("h", args[0]))
        with torch.no_grad():
            model(ids)
            expected = attention.q_proj(hidden["h"][0, 9]) * attention.scaling
        handle.remove()
        torch.testing.assert_close(q, expected)
    # the query at position 9 is the last row of the every-token record
    torch.testing.assert_close(all_record.queries[0][9], q)
    # the head-summed score to key 0 equals q · k0 (q already scaled): cross-check with the record
    assert all_record.queries[0].shape[0] == 10


@pytest.mark.parametrize("arch", ARCHS)
def test_remove_restores_the_model(arch):
    model, _ = make_tiny_model(arch)
    ids = torch.arange(10, 22)[None]
    with torch.no_grad():
        before = model(ids).logits
    implementation = model.config._attn_implementation
    capture = AttentionCapture(model)
    with torch.no_grad(), capture.recording([0], [11], queries="at_positions"):
        model(ids)
    capture.remove()
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
        assert not [name for name in vars(module) if name.startswith("_icl") or name == "_attn"]
    assert model.config._attn_implementation == implementation
    with torch.no_grad():
        assert torch.equal(model(ids).logits, before)


def test_unknown_architecture_says_how_to_add_one():
    model, _ = make_tiny_model("llama")
    model.config.model_type = "mystery"
    with pytest.raises(UnsupportedArchitecture, match="architectures.py"):
        AttentionCapture(model)
