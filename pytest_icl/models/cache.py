"""pytest-icl's own cache: file hashes, and dequantised GGUF models saved as safetensors.

Layout under :func:`default_cache_root` (``~/.cache/pytest-icl``, or ``PYTEST_ICL_CACHE``)::

    sha256-memo.json          path -> (size, mtime, sha256): big files are hashed once
    gguf/<name>.gguf          Gemma 3's GGUF, assembled from its four chunk packages
    models/<sha16>/           a dequantised GGUF: model.safetensors, config, tokenizer,
                              source.json, and manifest.json (the sha256 of every file)

A cached model is used only when every file in its manifest is present with the recorded
sha256 (through the memo, an unchanged file is not re-read). A truncated, partly written or
hand-edited cache is reported in one line and rebuilt from its source; it is never loaded.
Folders are written beside their final place and renamed, so a crash leaves no half cache.

Example::

    problem = check_model_cache(folder)       # None when sound
    write_model_cache(model, tokenizer, folder, source={"gguf": "...", "sha256": "..."})
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_icl.errors import CacheWarning  # noqa: F401 - defined in errors, used or re-exported here

Progress = Callable[[str], None]

MANIFEST = "manifest.json"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def default_cache_root() -> Path:
    env = os.environ.get("PYTEST_ICL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pytest-icl"


# --------------------------------------------------------------------------- file hashes


def file_sha256(path: Path, root: Path, report: Progress | None = None) -> str:
    """sha256 of a file, memoised by (path, size, mtime) so big files are hashed once."""
    real = Path(path).resolve()  # hub caches symlink snapshots to blobs
    stat = real.stat()
    key = str(real)
    memo = _read_memo(root)
    entry = memo.get(key)
    if entry and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
        return entry["sha256"]
    if report is not None:
        report(f"hashing {real.name} (first time)")
    digest = _stream_sha256(real)
    memo[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
    _write_memo(root, memo)
    return digest


def _stream_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _memo_path(root: Path) -> Path:
    return root / "sha256-memo.json"


def _read_memo(root: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(_memo_path(root).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_memo(root: Path, memo: dict[str, dict[str, Any]]) -> None:
    # Replace atomically; a concurrent writer may drop an entry, which only costs a rehash.
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=root, prefix=".sha256-memo-", suffix=".json")
        with os.fdopen(fd, "w") as handle:
            json.dump(memo, handle, indent=1, sort_keys=True)
        os.replace(tmp, _memo_path(root))
    except OSError:
        pass  # a read-only cache still works, it just rehashes


def folder_weights_hash(folder: Path, root: Path, report: Progress, model: Any) -> str:
    """sha256 of the weight files: the file's own hash for one file, else of a sha256sum listing."""
    files = _weight_files(folder)
    if not files:
        return state_dict_sha256(model)
    digests = [(path.name, file_sha256(path, root, report)) for path in files]
    if len(digests) == 1:
        return digests[0][1]
    listing = "".join(f"{digest}  {name}\n" for name, digest in digests)
    return hashlib.sha256(listing.encode()).hexdigest()


def _weight_files(folder: Path) -> list[Path]:
    # transformers prefers safetensors when both formats are present; hash what it loaded.
    for suffix in _WEIGHT_SUFFIXES:
        files = sorted(p for p in folder.glob(f"*{suffix}") if p.is_file())
        if files:
            return files
    return []


def state_dict_sha256(model: Any) -> str:
    """Fallback for weights we cannot find as files (e.g. an unusual hub layout)."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        # Bytes via uint8 so bf16 (which numpy lacks) hashes too.
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------- cached models


def check_model_cache(folder: Path, root: Path | None = None) -> str | None:
    """Why the cached model in ``folder`` cannot be trusted, or None when every file checks out."""
    folder = Path(folder)
    if not folder.is_dir():
        return "absent"
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        files = manifest["files"]
        if not isinstance(files, dict) or "model.safetensors" not in files:
            raise ValueError
    except (OSError, ValueError, KeyError, TypeError):
        return f"{folder} has no valid {MANIFEST} (partly written, or made by an older pytest-icl)"
    root = Path(root) if root is not None else folder.parent.parent
    for name, expected in sorted(files.items()):
        path = folder / name
        if not path.is_file():
            return f"{path} is missing"
        if path.stat().st_size != expected.get("size"):
            return f"{path} has {path.stat().st_size} bytes, the cache recorded {expected.get('size')} (truncated or changed)"
        if file_sha256(path, root) != expected.get("sha256"):
            return f"{path} does not match its recorded sha256 (damaged)"
    return None


def write_model_cache(model: Any, tokenizer: Any, folder: Path, *, source: dict[str, Any], root: Path | None = None) -> None:
    """Save to a temporary sibling folder with a sha256 manifest, then rename into place."""
    import safetensors.torch

    folder = Path(folder)
    root = Path(root) if root is not None else folder.parent.parent
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    try:
        safetensors.torch.save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        model.config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "source.json").write_text(json.dumps(source, indent=1))
        files = {}
        for path in sorted(p for p in tmp.iterdir() if p.is_file()):
            files[path.name] = {"size": path.stat().st_size, "sha256": _stream_sha256(path)}
        (tmp / MANIFEST).write_text(json.dumps({"files": files}, indent=1, sort_keys=True))
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary folder
        if folder.exists() and check_model_cache(folder, root) is not None:
            shutil.rmtree(folder)  # damaged: replace it rather than fail forever
        os.rename(tmp, folder)
    except OSError:
        # Another process (e.g. an xdist worker) finished the same cache first: keep theirs.
        if check_model_cache(folder, root) is not None:
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
