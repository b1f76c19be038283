"""Task files at collection time: which YAMLs are pytest-icl tasks, their names and settings.

Everything here reads YAML only (no lm-eval, no datasets, no torch), so collection stays fast.
Loading a task through lm-eval is :mod:`pytest_icl.tasks.loading`' job.

A task file is an lm-eval task YAML (``task:`` + ``output_type: multiple_choice``, either of
them possibly inherited through ``include:``) whose pytest-icl settings sit where lm-eval
accepts unknown data, under ``metadata:``::

    task: antonym_choice
    output_type: multiple_choice
    metadata:
      version: 1.0
      icl: {shots: 16, seed: 1, lr: 3.0e-3, position: label}

The old top-level ``icl:`` key is still read, with a :class:`TaskDeprecationWarning` (lm-eval
refuses it: ``TaskConfig.__init__() got an unexpected keyword argument 'icl'``).

Example::

    if is_task_file(path, strict=False):
        source = TaskSource.from_path(path)
        settings = TaskSettings.from_mapping(source.settings, origin=source.origin)
    source = find_task("sst2", [Path("tasks")])     # None when no task file there defines it
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from functools import cached_property
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any

import yaml

from pytest_icl.errors import (  # noqa: F401 - defined in errors, used or re-exported here
    TaskDataMissing,
    TaskDefinitionError,
    TaskDeprecationWarning,
    TaskError,
    TaskSettingsError,
    TaskUnavailable,
    TaskWarning,
)

# ---- settings: one rule per kind of value, whatever it comes from (flag, ini, task YAML)

_WHOLE = re.compile(r"[+-]?\d+")
AUTO_LR = "auto"

# The fewest eval examples a verdict is decided on. The interval of metric − control comes from
# resampling the eval examples (definitions §12.4); with one example every resample is that
# example, so the interval has zero width and one example's answer would pass or fail a property.
# Two is the least that resampling can tell apart from certainty; the gates ask for more.
MIN_EVAL_EXAMPLES = 2

# name -> (what the value must be, as the error message says it)
_RULES = {
    "shots": "k, the number of demonstrations (and of FT steps), must be a whole number of at least 1",
    "seed": "the demonstration seed must be a whole number from 0 to 4294967295",
    "lr": "the FT learning rate must be a finite number above 0, or 'auto' (chosen per model on the validation split)",
    "position": "the analysed position must be 'label' or 'prompt'",
    "limit": "the number of eval examples must be a whole number of at least 1",
    "thresholds": "must be a mapping of property name to margin (a finite number)",
    "tolerances": "must be a mapping of metric name to tolerance (a number ≥ 0; inf turns the check off)",
    "columns": "must be a mapping of column name to its description (text)",
    "expected_failures": "must be a mapping of property name to why it is known not to hold (text)",
}


def whole_number(value: Any) -> int | None:
    """The one rule for a whole number, from a flag, an ini file (text or TOML) or a YAML file; None if not one.

    16, 16.0 and "16" (or "16.0") are 16; 2.5, "2.5", True, nan and inf are not whole numbers
    (never truncated, never a bool).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _WHOLE.fullmatch(value.strip()):
        return int(value)
    number = finite_number(value)
    return int(number) if number is not None and number.is_integer() else None


def _float(value: Any) -> float | None:
    """An int, float or text that spells a number (nan and inf included) as a float; None otherwise (a bool too)."""
    if isinstance(value, bool):
        return None
    try:
        return float(value)  # a string too: PyYAML reads 3e-3 (no dot) as a string
    except (TypeError, ValueError, OverflowError):
        return None


def finite_number(value: Any) -> float | None:
    """The one rule for a number: a finite int or float, or text that spells one; None otherwise (nan, inf, a bool)."""
    number = _float(value)
    return number if number is not None and math.isfinite(number) else None


def tolerance_number(value: Any) -> float | None:
    """A baseline tolerance: a number ≥ 0, where inf (and only inf) switches the metric's check off; nan is none."""
    number = _float(value)
    return number if number is not None and number >= 0 else None  # False for nan


def _mapping_of(value: Any, rule) -> dict[str, float] | None:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        return None
    parsed = {k: rule(v) for k, v in value.items()}
    return None if any(v is None for v in parsed.values()) else parsed


def parse_setting(name: str, value: Any, *, where: str) -> Any:
    """``value`` as the setting ``name`` (shots, seed, lr, position, limit, ...) or TaskSettingsError.

    ``where`` names the value in the message: ``"tasks/x.yaml: icl.shots"`` or ``"--icl-shots"``.
    """
    if name in ("shots", "limit"):
        parsed = whole_number(value)
        ok = parsed is not None and parsed >= 1
    elif name == "seed":
        parsed = whole_number(value)
        ok = parsed is not None and 0 <= parsed < 2**32
    elif name == "lr":
        if isinstance(value, str) and value.strip().lower() == AUTO_LR:
            return AUTO_LR
        parsed = finite_number(value)
        ok = parsed is not None and parsed > 0
    elif name == "position":
        parsed, ok = value, value in ("label", "prompt")
    elif name in ("thresholds", "tolerances"):
        parsed = _mapping_of(value, finite_number if name == "thresholds" else tolerance_number)
        ok = parsed is not None
    elif name in ("columns", "expected_failures"):
        parsed = dict(value) if isinstance(value, dict) else None
        ok = parsed is not None and all(isinstance(k, str) and isinstance(v, str) for k, v in parsed.items())
    else:
        raise TaskSettingsError(f"{where}: unknown setting {name!r}")
    if not ok:
        raise TaskSettingsError(f"{where} = {value!r} is not allowed: {_RULES[name]}.")
    return parsed


# A task's name names its test ids and the report's files (samples_<model>_<task>.jsonl, pairs/<task>-<key>.json):
# letters, digits and . _ - + ( ) only, so that no name can leave the report folder or fail to be a file name
# there. Every lm-eval built-in name fits (a few use parentheses).
_TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+()-]*")
MAX_TASK_NAME = 100


def check_task_name(name: Any, *, origin: str) -> str:
    """``name`` when it can name a test id and a file; else TaskDefinitionError with a name that would do."""
    if isinstance(name, str) and len(name) <= MAX_TASK_NAME and _TASK_NAME.fullmatch(name):
        return name
    suggestion = re.sub(r"[^A-Za-z0-9._+()-]+", "_", str(name)).strip("._-+()")[:MAX_TASK_NAME] or "my_task"
    raise TaskDefinitionError(
        f"{origin}: the task name {name!r} cannot be used: it names the test ids and the report's files, so it must be "
        f"1 to {MAX_TASK_NAME} letters, digits, '.', '_', '-', '+', '(' or ')', starting with a letter or digit "
        f"(no '/', spaces or '..' paths). Rename it, e.g. task: {suggestion}"
    )


@dataclass(frozen=True)
class TaskSettings:
    """The ``metadata.icl`` key of a task YAML (command-line options override it)."""

    # k and the demonstration seed as the file states them; a loaded task's come from the YAML too
    # (num_fewshot, fewshot_config's shuffle_seed_S; see pytest_icl.tasks.fewshot). Seed 0: the pool unshuffled.
    shots: int = 16
    seed: int = 1
    lr: float | str = 1e-2  # or "auto": chosen per model on the validation split (pytest_icl.engine.tune.choose_lr)
    position: str = "label"  # "label" (official code: the appended first choice) | "prompt"
    thresholds: dict[str, float] = field(default_factory=dict)
    columns: dict[str, str] = field(default_factory=dict)
    tolerances: dict[str, float] = field(default_factory=dict)  # baseline comparison, see pytest_icl.report.baseline
    # property -> why it is known not to hold (measured); its test is marked xfail, non-strict,
    # so a model change that makes it hold shows up as XPASS instead of going unnoticed.
    expected_failures: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any] | None, *, origin: str) -> TaskSettings:
        """Validated settings; ``origin`` (the file, or the option) starts every error message."""
        if mapping is not None and not isinstance(mapping, dict):
            raise TaskSettingsError(f"{origin}: the icl settings must be a mapping (shots: 16, lr: 1.0e-2, ...), not {mapping!r}")
        mapping = dict(mapping or {})
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(mapping) - set(known), key=str)
        if unknown:
            hints = [f"{u!r} (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(str(u), known, 1)) else repr(u) for u in unknown]
            raise TaskSettingsError(f"{origin}: unknown icl setting(s) {', '.join(hints)}; known: {', '.join(known)}.")
        return cls(**{k: parse_setting(k, v, where=f"{origin}: icl.{k}") for k, v in mapping.items()})


def settings_of(data: dict[str, Any], *, origin: str, warn: bool = True) -> dict[str, Any]:
    """The raw pytest-icl settings of a task config: ``metadata.icl``, else the old top-level ``icl``."""
    meta = data.get("metadata")
    new = meta.get("icl") if isinstance(meta, dict) else None
    old = data.get("icl")
    if old is not None and new is not None:
        raise TaskSettingsError(f"{origin}: both a top-level 'icl:' and 'metadata: icl:' key; keep only 'metadata: icl:'.")
    if old is not None and warn:
        warnings.warn(
            TaskDeprecationWarning(
                f"{origin}: the top-level 'icl:' key is deprecated, because lm-eval refuses the file with it "
                "(TaskConfig.__init__() got an unexpected keyword argument 'icl'). Move it under 'metadata:', "
                "indented one level: 'metadata: {version: 1.0, icl: {shots: ..., lr: ...}}'; lm-eval keeps "
                "metadata as it is and pytest-icl reads it there."
            ),
            stacklevel=3,
        )
    settings = new if new is not None else old
    if settings is not None and not isinstance(settings, dict):
        raise TaskSettingsError(f"{origin}: the icl settings must be a mapping (shots: 16, lr: 1.0e-2, ...), not {settings!r}")
    return dict(settings or {})


# ---- reading YAML without lm-eval


class _TolerantLoader(yaml.SafeLoader):
    """Reads lm-eval YAML without resolving ``!function`` tags (collection only needs names).

    A tagged scalar is kept as its text, ``"!function pytest_icl.tasks.fewshot.shuffle_seed_1"``,
    so that collection can read the demonstration seed a task's ``fewshot_config`` names.
    """


def _tagged(loader, suffix: str, node) -> str:
    return f"!{suffix} {node.value}" if isinstance(node, yaml.ScalarNode) else f"!{suffix}"


_TolerantLoader.add_multi_constructor("!", _tagged)


def _parse(path: Path) -> Any:
    try:
        with Path(path).open("rb") as handle:
            return yaml.load(handle, Loader=_TolerantLoader)  # noqa: S506 - SafeLoader subclass
    except OSError as error:
        raise TaskDefinitionError(f"cannot read task file {path}: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        raise TaskDefinitionError(f"{path} is not valid YAML: {' '.join(str(error).split())}") from None


def _include_chain(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[Path, dict[str, Any]]]:
    """``path`` and every file it includes, each parsed: ``[(file, mapping), ...]``, bases first."""
    path = Path(path).resolve()
    if path in seen:
        raise TaskDefinitionError(f"{seen[0]}: include cycle through {path}")
    data = _parse(path)
    if not isinstance(data, dict):
        raise TaskDefinitionError(f"{path}: a task file must be a YAML mapping with a 'task:' name")
    chain = []
    includes = data.get("include")
    for include in includes if isinstance(includes, list) else [includes] if includes else []:
        if not isinstance(include, str):
            raise TaskDefinitionError(f"{path}: include: must name YAML files, not {include!r}")
        base = Path(include) if Path(include).is_absolute() else path.parent / include
        if not base.is_file():
            raise TaskDefinitionError(
                f"{path}: the included file {base} does not exist (include: paths are relative to the including YAML)"
            )
        chain += _include_chain(base, (*seen, path))
    return [*chain, (path, data)]


def _merged(chain: list[tuple[Path, dict[str, Any]]]) -> dict[str, Any]:
    # lm-eval's own rule (_yaml_loader.load_yaml): a shallow update, the including file's keys win.
    merged: dict[str, Any] = {}
    for _, data in chain:
        merged.update({k: v for k, v in data.items() if k != "include"})
    return merged


def read_task_header(path: Path) -> dict[str, Any]:
    """The task YAML as lm-eval merges it with its ``include:`` chain (``!function`` left as text).

    Raises TaskError (TaskDefinitionError) on a file that cannot be a task: unreadable, not valid
    YAML, not a mapping, no ``task:`` name, or malformed pytest-icl settings.
    """
    header = _merged(_include_chain(Path(path)))
    if not isinstance(header.get("task"), str):
        raise TaskDefinitionError(f"{path}: missing 'task:' name (a string)")
    settings_of(header, origin=str(path), warn=False)  # shape only; values are checked by TaskSettings
    return header


def _carries_settings(data: Any) -> bool:
    meta = data.get("metadata") if isinstance(data, dict) else None
    return isinstance(data, dict) and ("icl" in data or (isinstance(meta, dict) and "icl" in meta))


def is_task_file(path: Path, *, strict: bool = True) -> bool:
    """Whether collection should treat ``path`` as a pytest-icl task file.

    Ours: an lm-eval task (``task:`` name, ``output_type: multiple_choice``, either possibly
    inherited through ``include:``). Anything else (an Ansible ``tasks/main.yml``, a list, a
    generate_until task, an lm-eval group) is not ours: False, silently. ``_*.yaml`` are
    include-only bases, as in lm-eval. ``strict`` (the file is in a configured task folder or
    was named on the command line): a file that cannot be parsed, or that carries pytest-icl
    settings but is malformed, is True too, so that collection reports what is wrong with it.
    """
    path = Path(path)
    if path.suffix not in (".yaml", ".yml") or path.name.startswith("_"):
        return False
    try:
        own = _parse(path)
    except TaskDefinitionError:
        return strict  # unreadable or not YAML: only a configured task folder reports it
    if not isinstance(own, dict):
        return False
    try:
        header = read_task_header(path)
    except TaskError:
        return strict and _carries_settings(own)
    if header.get("output_type") == "multiple_choice":
        return True
    return strict and _carries_settings(header)


def _task_files(root: Path):
    if root.is_file():
        yield root
        return
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(s for s in subfolders if not s.startswith(".") and s != "__pycache__")
        for name in sorted(files):
            if name.endswith((".yaml", ".yml")) and not name.startswith("_"):
                yield Path(folder) / name


def task_headers(roots: list[Path]) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every file under ``roots`` that reads as a task file: its path and merged header (others passed over)."""
    for root in roots:
        for path in _task_files(Path(root)):
            try:
                yield path, read_task_header(path)
            except TaskError:
                continue


def find_task(name: str, roots: list[Path], *, headers: Iterable[tuple[Path, dict[str, Any]]] | None = None) -> TaskSource | None:
    """The task file under ``roots`` whose ``task:`` is ``name``, or None (then try lm-eval's built-ins).

    A shipped or user task wins over an lm-eval built-in of the same name. Files that are not
    clean task files are passed over; two files defining ``name`` are an error. ``headers``:
    :func:`task_headers` of ``roots`` when the caller has read them already (one walk for many names).
    """
    headers = task_headers(roots) if headers is None else headers
    found = sorted(
        {path.resolve() for path, header in headers if header["task"] == name and header.get("output_type") == "multiple_choice"}
    )
    if len(found) > 1:
        raise TaskDefinitionError(f"task {name!r} is defined by {len(found)} files: {', '.join(map(str, found))}; rename all but one.")
    return TaskSource.from_path(found[0]) if found else None


# ---- where a task comes from


def _stable(value: Any) -> Any:
    """A JSON-able stand-in for config values (a callable by its import name, not its address)."""
    if callable(value):
        return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', type(value).__name__)}"
    return str(value)


@dataclass(frozen=True)
class TaskSource:
    """Where a task definition comes from: a YAML file, an lm-eval name, or an inline config."""

    name: str
    path: Path | None = None
    config: dict[str, Any] | None = None  # inline lm-eval config (dict), e.g. from a test file
    settings: dict[str, Any] = field(default_factory=dict)  # the raw metadata.icl key

    @classmethod
    def from_path(cls, path: str | Path) -> TaskSource:
        path = Path(path).resolve()
        header = read_task_header(path)
        name = check_task_name(header["task"], origin=str(path))
        choices = header.get("doc_to_choice")
        if isinstance(choices, list) and len(choices) < 2:  # a fixed list: refused now, not once per example later
            raise TaskDefinitionError(
                f"{path}: doc_to_choice: {choices!r} has {len(choices)} choice; pytest-icl compares the model's scores of "
                "the answer choices, so a task needs at least 2"
            )
        return cls(name=name, path=path, settings=settings_of(header, origin=str(path)))

    @classmethod
    def builtin(cls, name: str) -> TaskSource:
        return cls(name=name)

    @classmethod
    def inline(cls, config: dict[str, Any]) -> TaskSource:
        if not isinstance(config, dict) or not isinstance(config.get("task"), str):
            raise TaskDefinitionError(f"an inline task config must be a dict with a 'task' name (a string), got {config!r}")
        config = dict(config)
        check_task_name(config["task"], origin="an inline task config")
        settings = settings_of(config, origin=f"inline task {config['task']!r}")
        config.pop("icl", None)
        return cls(name=config["task"], config=config, settings=settings)

    @property
    def origin(self) -> str:
        return str(self.path) if self.path else f"task {self.name!r}"

    @cached_property
    def content_hash(self) -> str:
        """What defines the task before loading: the YAML and its includes' bytes, the inline
        config, or the built-in name (with lm-eval's version), plus the settings. Two sources
        with the same name and different shots hash differently."""
        digest = hashlib.sha256()
        if self.path is not None:
            for path, _ in _include_chain(self.path):
                digest.update(b"file\0" + path.read_bytes() + b"\0")
        elif self.config is not None:
            digest.update(b"inline\0" + json.dumps(self.config, sort_keys=True, default=_stable).encode())
        else:
            try:
                version = package_metadata.version("lm_eval")
            except package_metadata.PackageNotFoundError:
                version = "?"
            digest.update(f"builtin\0{self.name}\0lm_eval {version}".encode())
        digest.update(b"\0settings\0" + json.dumps(self.settings, sort_keys=True, default=_stable).encode())
        return digest.hexdigest()[:16]
