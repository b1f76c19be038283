"""Model name resolution and loading (pytest_icl.models.loading)."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest
import torch

from pytest_icl.models import hub
from pytest_icl.models import loading as models
from pytest_icl.models.loading import (
    ALIASES,
    DEFAULT_MODEL,
    LoadedModel,
    ModelError,
    ModelSpec,
    gemma3_gguf_path,
    load_model,
    resolve_model,
    smollm2_gguf_path,
)

try:
    from tests.tiny_models import ARCHS, make_tiny_model, make_tokenizer, save_tiny_model
except ImportError:  # run as `pytest` rather than `python -m pytest`: repo root not on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.tiny_models import ARCHS, make_tiny_model, make_tokenizer, save_tiny_model

MISSING_HUB_ID = "no-such-org/no-such-model-xyz"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def icl_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache root for the whole session, so a dequantised GGUF is reused between tests."""
    return tmp_path_factory.mktemp("icl-cache")


@pytest.fixture
def tiny_gpt2(tmp_path: Path) -> Path:
    return save_tiny_model("gpt2", tmp_path / "tiny-gpt2")


# --------------------------------------------------------------------------- resolving


@pytest.mark.parametrize(
    ("typed", "alias", "hub_id"),
    [
        ("gpt2", "gpt2", "openai-community/gpt2"),
        ("GPT2-XL", "gpt2-xl", "openai-community/gpt2-xl"),
        ("gpt-neo-125m", "gpt-neo-125M", "EleutherAI/gpt-neo-125M"),
        ("GPT-NEO-2.7B", "gpt-neo-2.7B", "EleutherAI/gpt-neo-2.7B"),
        ("Pythia-70M", "pythia-70m", "EleutherAI/pythia-70m"),
        ("fairseq-dense-1.3b", "fairseq-dense-1.3B", "KoboldAI/fairseq-dense-1.3B"),
    ],
)
def test_hub_aliases_resolve_case_insensitively(typed: str, alias: str, hub_id: str) -> None:
    spec = resolve_model(typed)
    assert spec == ModelSpec(typed, "hub", hub_id, None, alias)


@pytest.mark.parametrize("typed", ["smollm2-135m", "SmolLM2-135M", "Gemma3-270M"])
def test_embedded_aliases(typed: str) -> None:
    spec = resolve_model(typed)
    assert spec.kind == "embedded"
    assert spec.id == typed.lower()
    assert spec.location == typed.lower()


def test_default_model_is_embedded_smollm2() -> None:
    assert DEFAULT_MODEL == "smollm2-135m"
    assert resolve_model(DEFAULT_MODEL).kind == "embedded"


@pytest.mark.parametrize(
    ("typed", "hub_id", "revision", "ident"),
    [
        ("EleutherAI/gpt-neo-125M", "EleutherAI/gpt-neo-125M", None, "EleutherAI--gpt-neo-125M"),
        ("EleutherAI/pythia-70m@step3000", "EleutherAI/pythia-70m", "step3000", "EleutherAI--pythia-70m@step3000"),
        ("org/name@refs/pr/3", "org/name", "refs/pr/3", "org--name@refs-pr-3"),
        ("gpt2@607a30d", "openai-community/gpt2", "607a30d", "gpt2@607a30d"),
    ],
)
def test_hub_ids_and_revisions(typed: str, hub_id: str, revision: str | None, ident: str) -> None:
    spec = resolve_model(typed)
    assert (spec.kind, spec.location, spec.revision, spec.id) == ("hub", hub_id, revision, ident)


def test_embedded_model_has_no_revision() -> None:
    with pytest.raises(ModelError, match="no revisions"):
        resolve_model("smollm2-135m@main")


def test_empty_revision_is_rejected() -> None:
    with pytest.raises(ModelError, match="nothing after '@'"):
        resolve_model("org/name@")


def test_existing_folder_is_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "my model [v2]"
    folder.mkdir()
    monkeypatch.chdir(tmp_path)
    spec = resolve_model("my model [v2]")
    assert spec.kind == "local"
    assert spec.location == str(folder.resolve())
    assert spec.id == "my-model-v2"


def test_existing_gguf_file_is_gguf(tmp_path: Path) -> None:
    gguf = tmp_path / "Tiny.Q4_K_M.GGUF"
    gguf.write_bytes(b"GGUF")
    spec = resolve_model(str(gguf))
    assert (spec.kind, spec.location, spec.id) == ("gguf", str(gguf.resolve()), "Tiny.Q4_K_M")


def test_other_existing_file_is_rejected(tmp_path: Path) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"")
    with pytest.raises(ModelError, match="not a .gguf file"):
        resolve_model(str(weights))


@pytest.mark.parametrize("typed", ["./nope", "/no/such/folder", "~/no-such-model-xyz", "model.gguf", "a/b/c"])
def test_missing_paths_say_no_such_file(typed: str) -> None:
    with pytest.raises(ModelError, match="no such file/folder"):
        resolve_model(typed)


@pytest.mark.parametrize("typed", ["not-a-model", "", "  ", "org with space/x", "org/na--me"])
def test_unknown_names_explain_what_to_type(typed: str) -> None:
    with pytest.raises(ModelError) as info:
        resolve_model(typed)
    message = str(info.value)
    assert "unknown model" in message
    for hint in ("smollm2-135m", "gemma3-270m", "gpt-neo-125M", "pythia-70m", "hub id", "@", "folder", ".gguf"):
        assert hint in message


@pytest.mark.parametrize("typed", [*ALIASES, "EleutherAI/gpt-neo-125M@refs/pr/1", "a.b/c_d@v1.0", "gpt2@x/y"])
def test_ids_are_pytest_safe(typed: str) -> None:
    ident = resolve_model(typed).id
    assert ident
    assert not set(ident) & set("/[]\\ :,")


# --------------------------------------------------------------------------- hub, offline


def test_offline_hub_id_fails_fast_with_both_fixes(monkeypatch: pytest.MonkeyPatch, icl_cache: Path) -> None:
    monkeypatch.setattr(hub, "_went_offline_because", None)  # an earlier task load may have probed and gone offline
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as info:
        load_model(f"{MISSING_HUB_ID}@v1.0", cache_root=icl_cache)
    message = str(info.value)
    assert MISSING_HUB_ID in message and "v1.0" in message
    assert "HF_HUB_OFFLINE" in message
    assert f"hf download {MISSING_HUB_ID} --revision v1.0" in message
    assert "huggingface-cli download" in message
    assert "HF_HOME" in message
    assert "--local-dir" in message and "folder" in message
    assert info.value.__cause__ is None  # no chained traceback wall


def test_unreachable_hub_is_detected_without_offline_variable(monkeypatch: pytest.MonkeyPatch, icl_cache: Path) -> None:
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    # Port 9 on localhost is closed: the probe fails at once on any machine, online or not.
    monkeypatch.setenv("HF_ENDPOINT", "https://127.0.0.1:9")
    with pytest.raises(ModelError) as info:
        load_model(MISSING_HUB_ID, cache_root=icl_cache)
    message = str(info.value)
    assert "cannot connect to 127.0.0.1:9" in message
    assert f"hf download {MISSING_HUB_ID}" in message and "pass that folder's path" in message


def test_going_offline_after_a_failed_probe_is_blamed_on_the_probe_not_the_user(monkeypatch: pytest.MonkeyPatch, icl_cache: Path) -> None:
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(var, "")  # recorded, so the variables the probe sets are undone after the test
        monkeypatch.delenv(var)
    monkeypatch.setenv("HF_ENDPOINT", "https://127.0.0.1:9")  # closed: the probe fails at once
    monkeypatch.setattr(hub, "_went_offline_because", None)

    hub.go_offline_if_hub_unreachable()  # what loading a task does first

    assert os.environ["HF_HUB_OFFLINE"] == os.environ["HF_DATASETS_OFFLINE"] == "1"
    with pytest.raises(ModelError) as info:
        load_model(MISSING_HUB_ID, cache_root=icl_cache)
    assert "the hub cannot be reached (cannot connect to 127.0.0.1:9 within 2 s)" in str(info.value)
    assert "HF_HUB_OFFLINE=1 is set" not in str(info.value)


def test_offline_variables_the_user_set_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://127.0.0.1:9")
    hub.go_offline_if_hub_unreachable()
    assert os.environ["HF_HUB_OFFLINE"] == "0" and "HF_DATASETS_OFFLINE" not in os.environ


def test_hub_model_from_local_cache_reports_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, icl_cache: Path) -> None:
    import huggingface_hub.constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    hub_cache = tmp_path / "hub"
    repo = hub_cache / "models--tiny-org--tiny-gpt2"
    save_tiny_model("gpt2", repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    for typed in ("tiny-org/tiny-gpt2", f"tiny-org/tiny-gpt2@{commit}"):
        loaded = load_model(typed, cache_root=icl_cache)
        assert loaded.spec.kind == "hub"
        assert loaded.revision == commit
        assert loaded.weights_hash == sha256_of(repo / "snapshots" / commit / "model.safetensors")
        loaded.close()


# --------------------------------------------------------------------------- local folders


def test_local_folder_loads_eager_eval_with_stable_hash(tiny_gpt2: Path, icl_cache: Path) -> None:
    first = load_model(str(tiny_gpt2), cache_root=icl_cache)
    second = load_model(resolve_model(str(tiny_gpt2)), cache_root=icl_cache)
    assert first.spec.kind == "local"
    assert first.model.config._attn_implementation == "eager"
    assert not first.model.training
    assert (first.device, first.dtype, first.revision) == (torch.device("cpu"), torch.float32, None)
    assert first.weights_hash == second.weights_hash == sha256_of(tiny_gpt2 / "model.safetensors")
    assert first.path == tiny_gpt2.resolve()
    assert (icl_cache / "sha256-memo.json").is_file()


def test_weights_hash_changes_when_a_weight_changes(tiny_gpt2: Path, icl_cache: Path) -> None:
    before = load_model(str(tiny_gpt2), cache_root=icl_cache)
    with torch.no_grad():
        before.model.transformer.h[0].attn.c_attn.weight[0, 0] += 1.0
    before.model.save_pretrained(tiny_gpt2)
    after = load_model(str(tiny_gpt2), cache_root=icl_cache)
    assert after.weights_hash != before.weights_hash
    assert after.weights_hash == sha256_of(tiny_gpt2 / "model.safetensors")


@pytest.mark.parametrize("arch", ARCHS)
def test_every_tiny_arch_loads_from_a_folder(arch: str, tmp_path: Path, icl_cache: Path) -> None:
    reference, tokenizer = make_tiny_model(arch)
    loaded = load_model(str(save_tiny_model(arch, tmp_path / arch)), cache_root=icl_cache)
    ids = tokenizer("Word: hot\nAntonym: cold", return_tensors="pt").input_ids
    with torch.no_grad():
        expected = reference(ids).logits
        out = loaded.model(ids, output_attentions=True)
    torch.testing.assert_close(out.logits, expected)
    assert len(out.attentions) == loaded.model.config.num_hidden_layers
    assert loaded.tokenizer(" positive").input_ids == tokenizer(" positive").input_ids


def test_missing_pad_token_becomes_eos(tmp_path: Path, icl_cache: Path) -> None:
    folder = save_tiny_model("llama", tmp_path / "nopad")
    tokenizer = make_tokenizer()
    tokenizer.pad_token = None
    tokenizer.save_pretrained(folder)
    loaded = load_model(str(folder), cache_root=icl_cache)
    assert loaded.tokenizer.pad_token == loaded.tokenizer.eos_token == "<|endoftext|>"


def test_dtype_and_device_options(tiny_gpt2: Path, icl_cache: Path) -> None:
    loaded = load_model(str(tiny_gpt2), dtype="bfloat16", device="cpu", cache_root=icl_cache)
    assert loaded.dtype == torch.bfloat16
    assert next(loaded.model.parameters()).dtype == torch.bfloat16
    with pytest.raises(ModelError, match="is not a dtype; use float32, bfloat16, float16 or auto"):
        load_model(str(tiny_gpt2), dtype="float8", cache_root=icl_cache)


def test_folder_without_config_points_at_its_gguf(tmp_path: Path, icl_cache: Path) -> None:
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelError, match=r"no config\.json.*m\.gguf"):
        load_model(str(tmp_path), cache_root=icl_cache)


def test_broken_gguf_file_is_a_model_error(tmp_path: Path) -> None:
    gguf = tmp_path / "broken.gguf"
    gguf.write_bytes(b"GGUF" + bytes(100))
    with pytest.raises(ModelError, match="cannot load .*broken.gguf"):
        load_model(str(gguf), cache_root=tmp_path / "cache")
    assert not (tmp_path / "cache" / "models").exists()  # nothing half-written


def test_close_drops_the_model(tiny_gpt2: Path, icl_cache: Path) -> None:
    with load_model(str(tiny_gpt2), cache_root=icl_cache) as loaded:
        assert isinstance(loaded, LoadedModel)
    assert loaded.model is None and loaded.tokenizer is None


def test_guard_rejects_non_linear_kv_projection() -> None:
    model, _ = make_tiny_model("llama")

    class Packed(torch.nn.Module):  # stands in for a quantised layer that keeps packed weights
        weight = torch.zeros(1, dtype=torch.uint8)

    model.model.layers[1].self_attn.v_proj = Packed()
    with pytest.raises(ModelError, match=r"layers\.1\.self_attn\.v_proj.*not a plain float nn\.Linear"):
        models._check_plain_float_weights(model, Path("x.gguf"))


# --------------------------------------------------------------------------- embedded GGUF


def test_smollm2_loads_and_its_safetensors_cache_is_exact(icl_cache: Path) -> None:
    steps: list[str] = []
    first = load_model("smollm2-135m", cache_root=icl_cache, progress=steps.append)
    ids = first.tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        first_logits = first.model(ids).logits
    first_ids = ids.tolist()
    assert first.weights_hash == sha256_of(smollm2_gguf_path())
    assert first.model.config.num_hidden_layers == 30
    k_proj = first.model.model.layers[0].self_attn.k_proj
    assert type(k_proj) is torch.nn.Linear and k_proj.weight.dtype == torch.float32
    assert first.tokenizer.decode(first_logits[0, -1].argmax()) == " Paris"
    first.close()

    second = load_model("smollm2-135m", cache_root=icl_cache, progress=steps.append)
    assert "loading cached weights" in steps
    assert second.path == icl_cache / "models" / second.weights_hash[:16]
    ids = second.tokenizer("The capital of France is", return_tensors="pt").input_ids
    assert ids.tolist() == first_ids
    with torch.no_grad():
        assert torch.equal(second.model(ids).logits, first_logits)
    assert second.model.config._attn_implementation == "eager"
    second.model.half()  # a GGUF-loaded model refuses this; ours is a plain model
    second.close()


def test_gemma3_gguf_is_assembled_once_into_the_cache(tmp_path: Path) -> None:
    path = gemma3_gguf_path(tmp_path)
    assert path.parent == tmp_path / "gguf"
    assert path.stat().st_size == models.GEMMA3_SIZE == 253_113_024
    assert gemma3_gguf_path(tmp_path) == path  # memoised hash: no second assembly
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp leftovers


# --------------------------------------------------------------------------- cache integrity


class FakeGguf:
    """A .gguf file whose 'dequantisation' builds a tiny Llama: the real cache path, in milliseconds."""

    def __init__(self, path: Path):
        self.path = path
        self.built: list[Path] = []

    def dequantise(self, path: Path):
        self.built.append(path)
        return make_tiny_model("llama")

    def __str__(self) -> str:
        return str(self.path)


@pytest.fixture
def fake_gguf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeGguf:
    fake = FakeGguf(tmp_path / "tiny.gguf")
    fake.path.write_bytes(b"GGUF tiny stand-in")
    monkeypatch.setattr(models, "_dequantise", fake.dequantise)
    return fake


def test_model_cache_records_sha256_and_is_reused(fake_gguf: FakeGguf, tmp_path: Path) -> None:
    from pytest_icl.models.cache import check_model_cache

    first = load_model(str(fake_gguf), cache_root=tmp_path / "cache")
    second = load_model(str(fake_gguf), cache_root=tmp_path / "cache")

    assert len(fake_gguf.built) == 1  # the second load read the cache
    assert check_model_cache(first.path) is None
    manifest = (first.path / "manifest.json").read_text()
    assert "model.safetensors" in manifest and "sha256" in manifest
    assert torch.equal(first.model.lm_head.weight, second.model.lm_head.weight)


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "no-manifest"])
def test_damaged_model_cache_is_reported_in_one_line_and_rebuilt(fake_gguf: FakeGguf, tmp_path: Path, damage: str) -> None:
    from pytest_icl.models.cache import CacheWarning, check_model_cache

    first = load_model(str(fake_gguf), cache_root=tmp_path / "cache")
    weights = first.path / "model.safetensors"
    data = weights.read_bytes()
    if damage == "truncate":
        weights.write_bytes(data[: len(data) // 2])
    elif damage == "flip":  # same size, other bytes: only the sha256 can tell
        weights.write_bytes(data[:-8] + bytes(b ^ 0xFF for b in data[-8:]))
    elif damage == "delete":
        weights.unlink()
    else:
        (first.path / "manifest.json").unlink()
    assert check_model_cache(first.path) is not None

    with pytest.warns(CacheWarning) as warned:
        again = load_model(str(fake_gguf), cache_root=tmp_path / "cache")

    assert len(fake_gguf.built) == 2  # rebuilt from the source, never loaded as garbage
    (warning,) = warned
    assert "\n" not in str(warning.message) and "rebuilding" in str(warning.message)
    assert check_model_cache(again.path) is None
    assert torch.equal(again.model.lm_head.weight, first.model.lm_head.weight)


def test_truncated_local_model_folder_is_one_paragraph(tmp_path: Path, icl_cache: Path) -> None:
    folder = save_tiny_model("gpt2", tmp_path / "tiny")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])

    with pytest.raises(ModelError) as info:
        load_model(str(folder), cache_root=icl_cache)

    message = str(info.value)
    assert message.startswith(f"cannot load the model in {folder}")
    assert "truncated or damaged" in message and len(message.splitlines()) == 1
    assert info.value.__cause__ is None
