"""Loading through a device map gives the same analysis as a plain load (on CPU).

A tiny model is saved, then loaded with ``from_pretrained(folder, **device_map_kwargs(...))``:
from a JSON file that places every module on a ``cpu`` entry, with ``auto``, and with
accelerate's dispatch hooks forced on (what a model split over several GPUs carries); the ZSL,
ICL and FT records must equal those of the plainly loaded model.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

from pytest_icl.engine.runs import run_settings
from pytest_icl.models.placement import check_placement, device_map_kwargs, input_device
from tests.tiny_models import save_tiny_model
from tests.unit.test_runs import _task

# Per architecture: a split of the modules, as a user's device map file would name them.
SPLITS = {
    "llama": ["model.embed_tokens", "model.layers.0", "model.layers.1", "model.norm", "model.rotary_emb", "lm_head"],
    "gpt_neo": [
        "transformer.wte",
        "transformer.wpe",
        "transformer.drop",
        "transformer.h.0",
        "transformer.h.1",
        "transformer.ln_f",
        "lm_head",
    ],
}


def _load(folder, **kwargs):
    return AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager", local_files_only=True, **kwargs).eval()


def _assert_same_records(a, b):
    for setting in ("zsl", "icl", "ft"):
        x, y = getattr(a, setting), getattr(b, setting)
        assert torch.equal(x.predictions, y.predictions)
        torch.testing.assert_close(x.logprobs, y.logprobs, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(x.outputs, y.outputs, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(x.eval_scores, y.eval_scores, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(a.ft_train_queries, b.ft_train_queries, atol=1e-6, rtol=1e-6)
    assert a.ft_losses == pytest.approx(b.ft_losses, abs=1e-6)


@pytest.fixture(scope="module", params=sorted(SPLITS))
def saved(request, tmp_path_factory):
    folder = save_tiny_model(request.param, tmp_path_factory.mktemp(request.param))
    model = _load(folder)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    return request.param, folder, tokenizer, run_settings(model, tokenizer, _task(multi_token=True))


def test_device_map_file_over_cpu_entries(saved, tmp_path):
    arch, folder, tokenizer, plain = saved
    path = tmp_path / "map.json"
    path.write_text(json.dumps(dict.fromkeys(SPLITS[arch], "cpu")))
    kwargs = device_map_kwargs(str(path), torch.device("cpu"))
    model = _load(folder, **kwargs)
    check_placement(model, kwargs["device_map"])
    assert input_device(model) == torch.device("cpu")
    _assert_same_records(run_settings(model, tokenizer, _task(multi_token=True)), plain)


def test_device_map_auto_on_cpu(saved):
    _, folder, tokenizer, plain = saved
    model = _load(folder, **device_map_kwargs("auto", torch.device("cpu")))
    check_placement(model)
    _assert_same_records(run_settings(model, tokenizer, _task(multi_token=True)), plain)


def test_accelerate_dispatch_hooks_do_not_change_the_records(saved):
    # A model split over GPUs carries accelerate's AlignDevicesHook on every mapped module (it
    # moves activations between devices). Force the same hooks on a CPU-only map: capture,
    # the FT step (K/V grads, fp32 masters) and the scoring must see through them.
    from accelerate import dispatch_model

    arch, folder, tokenizer, plain = saved
    model = dispatch_model(_load(folder), dict.fromkeys(SPLITS[arch], "cpu"), main_device="cpu", force_hooks=True)
    assert hasattr(model.get_input_embeddings(), "_hf_hook")
    check_placement(model)
    assert input_device(model) == torch.device("cpu")
    _assert_same_records(run_settings(model, tokenizer, _task(multi_token=True)), plain)


def _gpu_check():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gpu_check", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_gpu_check_dry_run(tmp_path, capsys):
    # The device check's own code path on the CPU (tiny models), so it is known to run before a GPU is lent.
    figures = tmp_path / "figures.json"
    code = _gpu_check().main(["--dry-run", "--limit", "4", "--families", "llama-7B-shaped", "--archs", "gpt_neo", "--json", str(figures)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "gpu_check: OK" in out and "gpt_neo: cpu vs cpu, fp32: max |diff| 0.00e+00 -> ok" in out
    data = json.loads(figures.read_text())
    llama = data["llama-7B-shaped"]
    assert llama["forward_tokens"] > 0 and llama["ft_tokens"] > 0 and llama["acc"]["icl"] >= 0
    assert set(llama["stages_s"]) >= {"zsl", "icl", "ft_train", "ft_eval", "build", "metrics"}
    assert data["failures"] == []


def test_gpu_check_without_cuda_exits_with_one_line(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _gpu_check().main([]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gpu_check: no CUDA device visible") and "--dry-run" in err and "\n" not in err
