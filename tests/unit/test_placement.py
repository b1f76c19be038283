"""Device, dtype, device-map and out-of-memory handling, on CPU with CUDA faked where needed."""

import json
import types

import pytest
import torch

from pytest_icl.models.placement import (
    PlacementError,
    check_placement,
    describe_oom,
    device_map_kwargs,
    input_device,
    is_out_of_memory,
    model_devices,
    parse_device,
    parse_dtype,
    read_device_map,
    resolve_device,
    resolve_dtype,
)
from tests.tiny_models import make_tiny_model


@pytest.fixture
def two_gpus(monkeypatch):
    """torch believes two GPUs are visible (nothing touches them: only placement's checks run)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.mark.parametrize(("text", "expected"), [("auto", "auto"), (" CPU", "cpu"), ("cuda", "cuda"), ("cuda:03", "cuda:3")])
def test_parse_device(text, expected):
    assert parse_device(text) == expected


@pytest.mark.parametrize("text", ["gpu", "cuda:", "cuda:-1", "cuda:a", "mps", ""])
def test_parse_device_names_the_value_and_the_choices(text):
    with pytest.raises(PlacementError) as error:
        parse_device(text)
    assert repr(text) in str(error.value) and "auto, cpu, cuda or cuda:N" in str(error.value)
    assert "\n" not in str(error.value)


def test_resolve_device_on_a_machine_without_gpu(no_gpu, monkeypatch):
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(PlacementError, match=r"^--icl-device cuda: this torch .* is a CPU-only build.*use --icl-device cpu") as error:
        resolve_device("cuda")
    assert "\n" not in str(error.value)


def test_resolve_device_says_when_cuda_visible_devices_hides_the_gpus(no_gpu, monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(PlacementError, match="CUDA_VISIBLE_DEVICES='' hides them all"):
        resolve_device("cuda:0")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    with pytest.raises(PlacementError, match="no device, or no working driver"):
        resolve_device("cuda")


def test_resolve_device_with_gpus(two_gpus, monkeypatch):
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    with pytest.raises(PlacementError, match=r"cuda:2: only 2 GPU\(s\) are visible \(cuda:0, cuda:1; CUDA_VISIBLE_DEVICES='3,5'\)"):
        resolve_device("cuda:2")


def test_dtypes(two_gpus, monkeypatch):
    assert parse_dtype("BF16") == "bfloat16"
    with pytest.raises(PlacementError, match="'int8' is not a dtype; use float32, bfloat16, float16 or auto"):
        parse_dtype("int8")
    assert resolve_dtype("float16", "cpu") is torch.float16
    assert resolve_dtype(torch.float64, "cpu") is torch.float64
    assert resolve_dtype("auto", "cpu") is torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # e.g. a V100
    assert resolve_dtype("auto", "cuda:1") is torch.float32


def _write(tmp_path, data, name="map.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_device_map_file_is_read_and_normalised(tmp_path, two_gpus):
    path = _write(tmp_path, {"model.embed_tokens": "cuda:0", "model.layers.0": 0, "model.layers.1": "cuda:1", "lm_head": "1"})
    assert read_device_map(path) == {"model.embed_tokens": 0, "model.layers.0": 0, "model.layers.1": 1, "lm_head": 1}
    assert device_map_kwargs(str(path), torch.device("cuda"))["device_map"]["model.layers.1"] == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ([0, 1], "non-empty JSON object"),
        ({}, "non-empty JSON object"),
        ({"lm_head": "disk"}, "offloaded to disk .* cannot be finetuned"),
        ({"lm_head": -1}, "maps to -1; each device must be a GPU index"),
        ({"lm_head": True}, "maps to True"),
        ({"lm_head": "tpu"}, "maps to 'tpu'"),
        ({"lm_head": [0]}, r"maps to \[0\]"),
    ],
)
def test_bad_device_map_files(tmp_path, content, message):
    path = _write(tmp_path, content)
    with pytest.raises(PlacementError, match=message) as error:
        device_map_kwargs(str(path), "cpu")
    assert str(error.value).startswith(f"--icl-device-map {path}")


def test_device_map_values_are_checked_against_the_device(tmp_path, two_gpus):
    gpus = _write(tmp_path, {"a": 0, "b": 2})
    with pytest.raises(PlacementError, match=r"names GPU 2, but 2 GPU\(s\) are visible \(0 to 1"):
        device_map_kwargs(str(gpus), "cuda")
    with pytest.raises(PlacementError, match="puts modules on GPU 0, 2, but the device is the CPU"):
        device_map_kwargs(str(gpus), "cpu")
    mixed = _write(tmp_path, {"a": 0, "b": "cpu"}, "mixed.json")
    with pytest.raises(PlacementError, match='mixes GPUs and "cpu"'):
        device_map_kwargs(str(mixed), "cuda")


def test_named_device_maps(two_gpus, tmp_path):
    assert device_map_kwargs(None, "cpu") == {} == device_map_kwargs("", "cuda")
    assert device_map_kwargs("Auto", torch.device("cuda")) == {"device_map": "auto"}
    assert device_map_kwargs("balanced", "cuda") == {"device_map": "balanced"}
    on_cpu = device_map_kwargs("auto", "cpu")  # --icl-device cpu: accelerate may not use the GPUs
    assert on_cpu["device_map"] == "auto" and list(on_cpu["max_memory"]) == ["cpu"] and on_cpu["max_memory"]["cpu"] > 2**20
    with pytest.raises(PlacementError, match="spreads the model over every visible GPU, but --icl-device cuda:1 names one"):
        device_map_kwargs("auto", "cuda:1")
    with pytest.raises(PlacementError, match="'nowhere.json' is neither auto nor balanced, and no such file exists"):
        device_map_kwargs("nowhere.json", "cuda")


def test_check_placement_refuses_offloaded_weights_and_unknown_modules():
    model, _ = make_tiny_model("llama")
    check_placement(model, {"model.embed_tokens": "cpu", "model.layers": "cpu", "lm_head": "cpu", "": "cpu"})
    with pytest.raises(
        PlacementError,
        match=r"'model.layer.0' name\(s\) no module of this model \(LlamaForCausalLM; its top-level modules: lm_head, model\)",
    ):
        check_placement(model, {"model.layer.0": "cpu"})
    with torch.device("meta"):
        offloaded, _ = make_tiny_model("gpt2")
    with pytest.raises(PlacementError, match=r"offloaded \d+ parameters \(e.g. transformer.wte.weight\).*cannot be finetuned"):
        check_placement(offloaded)


def test_input_device_follows_the_embedding_and_accelerate_hooks():
    model, _ = make_tiny_model("gpt2")
    assert input_device(model) == torch.device("cpu")
    assert model_devices(model) == ["cpu"]
    model.get_input_embeddings()._hf_hook = types.SimpleNamespace(execution_device=1)
    assert input_device(model) == torch.device("cuda:1")
    model.get_input_embeddings()._hf_hook = types.SimpleNamespace(execution_device="cuda:0")
    assert input_device(model) == torch.device("cuda:0")


def test_out_of_memory_is_recognised():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(
        RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes")
    )
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))


def test_describe_oom_on_cuda_gives_the_figures_and_hints(monkeypatch):
    gib = 1024**3
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: types.SimpleNamespace(name="NVIDIA H200", total_memory=140 * gib))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda i: 120 * gib)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda i: 130 * gib)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda i: 135 * gib)
    error = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 1 has a total capacity of 140 GiB\nmore")
    text = describe_oom(error, "cuda:1", batch_size=16)
    assert text.startswith("out of GPU memory on cuda:1 (NVIDIA H200, 140.0 GiB): 120.0 GiB held by tensors, 130.0 GiB reserved")
    assert "peak 135.0 GiB; the failing request was 2.00 GiB." in text
    assert "--icl-dtype bfloat16" in text and "--icl-batch-size 8 (smaller than 16" in text and "--icl-device-map auto" in text
    assert "\n" not in text


def test_describe_oom_on_cpu():
    text = describe_oom(RuntimeError("DefaultCPUAllocator: can't allocate memory\ntrace"), "cpu")
    assert text.startswith("out of memory on cpu: DefaultCPUAllocator: can't allocate memory.") and "a smaller --icl-batch-size" in text


def test_placement_and_scheduling_import_no_heavy_library():
    # Both are imported by the plugin at collection (and scheduling before CUDA may start).
    from tests.unit.test_plugin_import import _imported_after

    assert _imported_after("import pytest_icl.models.placement, pytest_icl.plugin.scheduling") == []
