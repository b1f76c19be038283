"""Where a model's weights live: device, dtype, device maps for models larger than one GPU.

Every user-facing placement choice is checked here, with a one-paragraph error that names
the value and what is allowed (:class:`PlacementError`), so the plugin can turn it into a
usage error or a failed pair instead of a traceback:

* ``--icl-device``: ``auto`` (CUDA when a GPU is visible, else CPU), ``cpu``, ``cuda``,
  ``cuda:N``. ``cuda`` asked for on a machine without a visible GPU is an error, not a silent
  fall-back to the CPU (a GPU run that quietly takes a hundred times longer is worse).
* ``--icl-dtype``: ``float32``, ``bfloat16``, ``float16`` or ``auto`` = bf16 on a GPU that
  supports it, fp32 otherwise. FT always updates fp32 master copies (``finetune``), and
  capture casts every record to fp32, so bf16 only changes the forward passes.
* ``--icl-device-map``: ``auto`` / ``balanced`` (accelerate's names: spread the layers over
  every visible GPU) or a JSON file ``{"module name": device}``. Weights accelerate would
  *offload* (kept on the CPU or disk and streamed in per forward) cannot be finetuned:
  :func:`check_placement` rejects such a load instead of letting FT update a copy that is
  thrown away after each forward.
* An out-of-memory error becomes one paragraph with the memory figures and what to change
  (:func:`describe_oom`).

torch is imported inside functions only: the plugin imports this module at collection.

Example::

    device = resolve_device(parse_device("auto"))
    dtype = resolve_dtype("auto", device)               # torch.bfloat16 on a recent GPU
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **device_map_kwargs("auto", device))
    check_placement(model)
    ids = ids.to(input_device(model))
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_icl.errors import PlacementError  # noqa: F401 - defined in errors, used or re-exported here

if TYPE_CHECKING:
    import torch
    from torch import nn

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
DTYPE_CHOICES = "float32, bfloat16, float16 or auto"
DEVICE_MAP_CHOICES = "auto, balanced or a JSON file mapping module names to devices"
NAMED_DEVICE_MAPS = ("auto", "balanced")  # accelerate's names (transformers' from_pretrained passes them on)

_CUDA_INDEX = re.compile(r"cuda:(\d+)")
_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "auto": "auto",
}
_GIB = 1024**3


# --------------------------------------------------------------------------- devices


def parse_device(text: str) -> str:
    """The canonical spelling of an ``--icl-device`` value (checked, nothing imported)."""
    value = str(text).strip().lower()
    if value in ("auto", "cpu", "cuda"):
        return value
    match = _CUDA_INDEX.fullmatch(value)
    if match:
        return f"cuda:{int(match[1])}"
    raise PlacementError(f"--icl-device: {text!r} is not a device; use {DEVICE_CHOICES} (N = an index among the visible GPUs).")


def resolve_device(spec: str) -> torch.device:
    """The torch device for ``spec``; a GPU asked for but not there is a :class:`PlacementError`.

    Calls ``torch.cuda.is_available()``/``device_count()``, which may initialise the CUDA
    driver: an xdist worker must pin its GPUs (``scheduling.pin_worker``) before this runs.
    """
    import torch

    spec = parse_device(spec)
    if spec == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if spec == "auto":
        return torch.device("cuda" if available else "cpu")
    if not available:
        raise PlacementError(f"--icl-device {spec}: {_why_no_cuda()}; use --icl-device cpu (or auto, which picks the CPU here).")
    count = torch.cuda.device_count()
    index = int(spec.partition(":")[2] or 0)
    if index >= count:
        raise PlacementError(
            f"--icl-device {spec}: only {count} GPU(s) are visible ({', '.join(f'cuda:{i}' for i in range(count))}"
            f"{_visible_note()}); use one of those, or cuda / auto."
        )
    return torch.device(spec)


def _visible_note() -> str:
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    return "" if value is None else f"; CUDA_VISIBLE_DEVICES={value!r}"


def _why_no_cuda() -> str:
    import torch

    if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
        return f"this torch ({torch.__version__}) is a CPU-only build, so no GPU can be used (install a CUDA build of torch)"
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is not None and (not value.strip() or value.strip().startswith("-1")):
        return f"no GPU is visible: CUDA_VISIBLE_DEVICES={value!r} hides them all"
    return f"no GPU is visible to this torch ({torch.__version__}, CUDA {torch.version.cuda}): no device, or no working driver"


# --------------------------------------------------------------------------- dtypes


def parse_dtype(text: str) -> str:
    """The canonical spelling of an ``--icl-dtype`` value (checked, nothing imported)."""
    value = _DTYPES.get(str(text).strip().lower())
    if value is None:
        raise PlacementError(f"--icl-dtype: {text!r} is not a dtype; use {DTYPE_CHOICES}.")
    return value


def resolve_dtype(spec: str | torch.dtype, device: torch.device | str) -> torch.dtype | str:
    """The torch dtype for ``spec`` on ``device``; ``auto`` = bf16 on a GPU that has it, else fp32.

    fp16 is never chosen by ``auto``: its range overflows in some models' activations
    (GPT-Neo's), and a GPU without bf16 runs fp32 correctly, if slower.
    """
    import torch

    if isinstance(spec, torch.dtype):
        return spec
    name = parse_dtype(spec)
    if name != "auto":
        return getattr(torch, name)
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


# --------------------------------------------------------------------------- device maps


def read_device_map(path: str | Path, *, where: str | None = None) -> dict[str, int | str]:
    """A device map file: a JSON object ``{"module name": GPU index | "cuda:N" | "cpu"}``.

    GPU entries become plain indices (accelerate's form). ``"disk"`` and ``"meta"`` are refused:
    offloaded weights cannot be finetuned. ``where`` starts each message (default ``--icl-device-map PATH``).
    """
    where = where or f"--icl-device-map {path}"
    try:
        data = json.loads(Path(path).read_text())
    except OSError as error:
        raise PlacementError(f"{where}: cannot read the file ({error.strerror or error}); give {DEVICE_MAP_CHOICES}.") from None
    except ValueError as error:
        raise PlacementError(
            f"{where}: not valid JSON ({error}); the file must hold one object such as "
            '{"model.embed_tokens": 0, "model.layers.0": 0, "model.layers.1": 1, "lm_head": 1}.'
        ) from None
    if not isinstance(data, dict) or not data:
        raise PlacementError(
            f"{where}: the file must hold a non-empty JSON object mapping module names to devices, got {type(data).__name__}."
        )
    mapping: dict[str, int | str] = {}
    for name, device in data.items():
        mapping[name] = _map_entry(where, name, device)
    return mapping


def device_map_problem(path: str | Path) -> str | None:
    """Why the file cannot be a device map (the loader's own rule, without torch), or None: ``--icl-device-map`` asks at start."""
    try:
        read_device_map(path, where=str(path))
    except PlacementError as error:
        return str(error)
    return None


def _map_entry(where: str, name: str, device: Any) -> int | str:
    allowed = 'a GPU index (0, 1, ...), "cuda:N" or "cpu"'
    if isinstance(device, bool) or not isinstance(device, (int, str)):
        raise PlacementError(f"{where}: {name!r} maps to {device!r}; each device must be {allowed}.")
    if isinstance(device, int):
        if device < 0:
            raise PlacementError(f"{where}: {name!r} maps to {device}; each device must be {allowed}.")
        return device
    value = device.strip().lower()
    if value == "cpu":
        return "cpu"
    if value == "cuda":
        return 0
    match = _CUDA_INDEX.fullmatch(value)
    if match:
        return int(match[1])
    if value.isdigit():
        return int(value)
    if value in ("disk", "meta"):
        raise PlacementError(
            f"{where}: {name!r} maps to {device!r}: weights offloaded to {value} are streamed in per forward and "
            f"cannot be finetuned; map every module to {allowed}."
        )
    raise PlacementError(f"{where}: {name!r} maps to {device!r}; each device must be {allowed}.")


def device_map_kwargs(device_map: str | None, device: torch.device | str) -> dict[str, Any]:
    """Keyword arguments for ``from_pretrained`` that place the model as ``--icl-device-map`` says.

    ``None`` gives ``{}`` (load, then ``model.to(device)`` as before). With a device map the
    caller must *not* move the model afterwards: the map placed it, and accelerate's hooks move
    the activations between devices.

    ``auto``/``balanced`` spread the layers over every visible GPU (choose GPUs with
    CUDA_VISIBLE_DEVICES, or ``--icl-gpus-per-worker`` under xdist); on the CPU they keep the
    model in CPU memory (``max_memory`` names only the CPU, so a GPU is not used behind
    ``--icl-device cpu``'s back). A file's GPU indices are checked against the visible GPUs.
    """
    import torch

    if device_map is None or not str(device_map).strip():
        return {}
    device = torch.device(device)
    name = str(device_map).strip()
    if name.lower() in NAMED_DEVICE_MAPS:
        if device.type == "cpu":
            return {"device_map": name.lower(), "max_memory": {"cpu": _physical_memory_bytes()}}
        if device.index is not None:
            raise PlacementError(
                f"--icl-device-map {name} spreads the model over every visible GPU, but --icl-device {device} names one: "
                "drop one of the two (choose the GPUs with CUDA_VISIBLE_DEVICES or --icl-gpus-per-worker)."
            )
        return {"device_map": name.lower()}
    path = Path(name).expanduser()
    if not path.is_file():
        raise PlacementError(
            f"--icl-device-map: {name!r} is neither auto nor balanced, and no such file exists; give {DEVICE_MAP_CHOICES}."
        )
    mapping = read_device_map(path)
    gpus = sorted({d for d in mapping.values() if isinstance(d, int)})
    if gpus:
        if device.type == "cpu":
            raise PlacementError(
                f"--icl-device-map {name}: the map puts modules on GPU {', '.join(map(str, gpus))}, but the device is the CPU "
                '(--icl-device cpu, or auto on a machine without a visible GPU); map every module to "cpu" or use a GPU.'
            )
        if "cpu" in mapping.values():
            raise PlacementError(
                f'--icl-device-map {name}: the map mixes GPUs and "cpu"; with a GPU in the map accelerate offloads the '
                '"cpu" modules (streams their weights in per forward), and offloaded weights cannot be finetuned. '
                'Map every module to a GPU, or every module to "cpu".'
            )
        count = torch.cuda.device_count()
        missing = [g for g in gpus if g >= count]
        if missing:
            raise PlacementError(
                f"--icl-device-map {name}: the map names GPU {', '.join(map(str, missing))}, but {count} GPU(s) are visible "
                f"(0 to {count - 1}{_visible_note()}); indices count the visible GPUs only."
            )
    return {"device_map": mapping}


def _physical_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 1 << 40  # not POSIX: no limit worth stating


def check_placement(model: nn.Module, device_map: dict[str, Any] | None = None) -> None:
    """Refuse a loaded model that FT cannot update, or a map that names modules it lacks.

    accelerate *offloads* what does not fit the GPUs (the parameter becomes a ``meta`` tensor
    and the real weight lives in CPU memory or on disk, copied in for each forward): an SGD
    step on the K/V weights would change nothing that is kept. A device-map key that names no
    module is a typo that transformers silently ignores (the module lands on the CPU).
    """
    if device_map:
        modules = {name for name, _ in model.named_modules()} | {name for name, _ in model.named_parameters()}
        unknown = [key for key in device_map if key and key not in modules]
        if unknown:
            top = ", ".join(sorted(name for name, _ in model.named_children()))
            raise PlacementError(
                f"--icl-device-map: {', '.join(repr(k) for k in unknown[:5])} name(s) no module of this model "
                f"({type(model).__name__}; its top-level modules: {top}); use the names model.named_modules() gives."
            )
    offloaded = [name for name, param in model.named_parameters() if param.device.type == "meta"]
    offload_map = getattr(model, "hf_device_map", None) or {}
    gpus_used = any(isinstance(d, int) or str(d).startswith("cuda") for d in offload_map.values())
    on_cpu = [name for name, d in offload_map.items() if gpus_used and d in ("cpu", "disk")]
    if offloaded or on_cpu:
        example = (offloaded or on_cpu)[0]
        raise PlacementError(
            f"the model does not fit the GPU memory: accelerate offloaded {len(offloaded) or len(on_cpu)} "
            f"{'parameters' if offloaded else 'modules'} (e.g. {example}) to CPU memory or disk, and offloaded weights "
            "cannot be finetuned (an SGD step would update a copy that is dropped after each forward). "
            "Make more GPU memory visible (more GPUs, --icl-gpus-per-worker N under xdist), use --icl-dtype bfloat16, "
            "or test a smaller model."
        )


def model_devices(model: nn.Module) -> list[str]:
    """The devices holding the model's parameters, in order of first use (e.g. ``["cuda:0", "cuda:1"]``)."""
    seen: dict[str, None] = {}
    for param in model.parameters():
        seen.setdefault(str(param.device), None)
    return list(seen)


def input_device(model: nn.Module) -> torch.device:
    """Where the model's input ids must go: its input embedding's device.

    ``next(model.parameters()).device`` is the first *registered* parameter's device, which
    under a device map need not be the embedding's; with accelerate's hooks the embedding's
    execution device wins (its weight may be a ``meta`` placeholder).
    """
    import torch

    embedding = model.get_input_embeddings()
    hook = getattr(embedding, "_hf_hook", None)
    execution = getattr(hook, "execution_device", None)
    if execution is not None:
        return torch.device(f"cuda:{execution}" if isinstance(execution, int) else execution)
    return embedding.weight.device


# --------------------------------------------------------------------------- out of memory


def is_out_of_memory(error: BaseException) -> bool:
    """A CUDA out-of-memory error, or the CPU allocator's failure to allocate."""
    import torch

    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("out of memory" in text.lower() or "can't allocate memory" in text)


def describe_oom(error: BaseException, device: torch.device | str, *, batch_size: int | None = None) -> str:
    """One paragraph: where memory ran out, the figures, and what to change.

    The caller should drop every reference to ``error`` afterwards (its traceback keeps the
    failed pass's tensors alive) and call ``torch.cuda.empty_cache()`` before the next pair.
    """
    import torch

    device = torch.device(device)
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    asked = re.search(r"Tried to allocate ([\d.]+ [KMGT]?i?B)", str(error))
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        properties = torch.cuda.get_device_properties(index)
        figures = (
            f"out of GPU memory on cuda:{index} ({properties.name}, {properties.total_memory / _GIB:.1f} GiB): "
            f"{torch.cuda.memory_allocated(index) / _GIB:.1f} GiB held by tensors, "
            f"{torch.cuda.memory_reserved(index) / _GIB:.1f} GiB reserved by PyTorch's allocator, "
            f"peak {torch.cuda.max_memory_allocated(index) / _GIB:.1f} GiB"
            + (f"; the failing request was {asked[1]}" if asked else "")
            + "."
        )
    else:
        figures = f"out of memory on {device}: {first}."
    smaller = f"smaller than {batch_size}" if batch_size else "smaller"
    hints = [
        "--icl-dtype bfloat16 (halves the weights and activations; FT still updates fp32 copies)",
        f"--icl-batch-size {max(1, batch_size // 2)} ({smaller}: fewer eval rows per forward)"
        if batch_size and batch_size > 1
        else f"a {smaller} --icl-batch-size",
        "--icl-device-map auto (spreads the layers over every visible GPU)",
    ]
    return f"{figures} Try {'; '.join(hints)}."
