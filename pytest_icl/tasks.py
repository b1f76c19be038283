"""ICL tasks from lm-eval task definitions: built-in names, YAML files, or inline examples.

lm-eval does the dataset loading and the rendering (``doc_to_text``, ``doc_to_choice``,
``doc_to_target``); this module picks the demonstrations and eval examples the way Dai et al.
do and freezes them into a plain :class:`IclTask`.

* Demonstrations: the first k of the few-shot pool shuffled with the task seed (spec §3), the
  same fixed list for every eval example, for ICL and for FT.
* Eval examples: the eval split (test, else validation) shuffled with seed 1, first ``limit``,
  leaving out any whose prompt is also a demonstration's (its answer would be in the context).
* Prompts: ``description + Σ(demo + fewshot_delimiter) + query``, which is what lm-eval's
  ``fewshot_context`` renders (a test checks it against lm-eval).

A task YAML may carry an ``icl:`` key (shots, seed, lr, position, thresholds, columns); it is
read here and removed before lm-eval sees the config. Relative ``data_files`` are made
relative to the YAML file (lm-eval itself would resolve them against the working directory).

Example::

    task = load_task(TaskSource.from_path("tasks/antonym_choice/antonym_choice.yaml"), limit=32)
    task.prompt(task.eval_examples[0])
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
import warnings
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from pytest_icl.models import go_offline_if_hub_unreachable


class TaskError(Exception):
    """A task definition or its data cannot be used; the message says what to do."""


class TaskUnavailable(TaskError):
    """The task's data cannot be had (offline, not downloaded)."""


class TaskWarning(UserWarning):
    """Something about a task that the run works around, and the user should know."""


@dataclass(frozen=True)
class Example:
    text: str  # the prompt for this example, without its answer (lm-eval's doc_to_text)
    choices: tuple[str, ...]
    gold: int

    @property
    def answer(self) -> str:
        return self.choices[self.gold]


@dataclass(frozen=True)
class TaskSettings:
    """The ``icl:`` key of a task YAML (CLI options override it)."""

    shots: int = 16
    seed: int = 1
    lr: float = 1e-2
    position: str = "label"  # "label" (official code: the appended first choice) | "prompt"
    thresholds: dict[str, float] = field(default_factory=dict)
    columns: dict[str, str] = field(default_factory=dict)
    tolerances: dict[str, float] = field(default_factory=dict)  # baseline comparison, see pytest_icl.baseline
    # property -> why it is known not to hold (measured); its test is marked xfail, non-strict,
    # so a model change that makes it hold shows up as XPASS instead of going unnoticed.
    expected_failures: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any] | None, *, origin: str) -> TaskSettings:
        mapping = dict(mapping or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(mapping) - known)
        if unknown:
            raise TaskError(f"{origin}: unknown key(s) under 'icl:': {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        try:
            settings = cls(**mapping)
            settings = replace(settings, shots=int(settings.shots), seed=int(settings.seed), lr=float(settings.lr))
        except (TypeError, ValueError) as error:
            raise TaskError(f"{origin}: bad value under 'icl:': {error}") from None
        if settings.position not in ("label", "prompt"):
            raise TaskError(f"{origin}: icl.position must be 'label' or 'prompt', not {settings.position!r}")
        if settings.shots < 1:
            raise TaskError(f"{origin}: icl.shots must be at least 1")
        return settings


@dataclass(frozen=True)
class IclTask:
    name: str
    description: str
    target_delimiter: str
    fewshot_delimiter: str
    demonstrations: tuple[Example, ...]
    eval_examples: tuple[Example, ...]
    settings: TaskSettings
    config_hash: str  # config + demonstrations + eval examples: a changed task never matches a stale baseline

    def demonstration_text(self, example: Example) -> str:
        """One demonstration as ICL shows it and FT trains on it: query, delimiter, answer."""
        return example.text + self.target_delimiter + example.answer

    def context(self) -> str:
        return self.description + "".join(self.demonstration_text(d) + self.fewshot_delimiter for d in self.demonstrations)

    def prompt(self, example: Example, *, shots: bool = True) -> str:
        return (self.context() if shots else self.description) + example.text


@dataclass(frozen=True)
class TaskSource:
    """Where a task definition comes from: a YAML file, an lm-eval name, or an inline config."""

    name: str
    path: Path | None = None
    config: dict[str, Any] | None = None  # inline lm-eval config (dict), e.g. from a test file
    settings: dict[str, Any] = field(default_factory=dict)  # the `icl:` key

    @classmethod
    def from_path(cls, path: str | Path) -> TaskSource:
        path = Path(path).resolve()
        header = read_task_header(path)
        return cls(name=header["task"], path=path, settings=header.get("icl") or {})

    @classmethod
    def builtin(cls, name: str) -> TaskSource:
        return cls(name=name)

    @classmethod
    def inline(cls, config: dict[str, Any]) -> TaskSource:
        config = dict(config)
        settings = config.pop("icl", {}) or {}
        if "task" not in config:
            raise TaskError("an inline task config needs a 'task' name")
        return cls(name=config["task"], config=config, settings=settings)

    @property
    def origin(self) -> str:
        return str(self.path) if self.path else f"task {self.name!r}"


# ---- collection-time reading (no lm-eval, no datasets: must stay fast)


class _TolerantLoader(yaml.SafeLoader):
    """Reads lm-eval YAML without resolving ``!function`` tags (collection only needs names)."""


_TolerantLoader.add_multi_constructor("!", lambda loader, suffix, node: f"!{suffix}")


def read_task_header(path: Path) -> dict[str, Any]:
    """The ``task`` name and ``icl`` key of a task YAML; raises TaskError on malformed files."""
    try:
        with Path(path).open("rb") as handle:
            data = yaml.load(handle, Loader=_TolerantLoader)  # noqa: S506 - SafeLoader subclass
    except OSError as error:
        raise TaskError(f"cannot read task file {path}: {error}") from None
    except yaml.YAMLError as error:
        raise TaskError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise TaskError(f"{path}: a task file must be a YAML mapping with a 'task:' name")
    if not isinstance(data.get("task"), str):
        raise TaskError(f"{path}: missing 'task:' name (a string)")
    if "icl" in data and data["icl"] is not None and not isinstance(data["icl"], dict):
        raise TaskError(f"{path}: 'icl:' must be a mapping")
    return data


def is_task_file(path: Path) -> bool:
    """A YAML file that defines an lm-eval task (``_*.yaml`` are include-only bases, as in lm-eval)."""
    if path.suffix not in (".yaml", ".yml") or path.name.startswith("_"):
        return False
    try:
        return isinstance(read_task_header(path).get("task"), str)
    except TaskError:
        return True  # let collection report the malformed file instead of silently skipping it


# ---- loading through lm-eval


def _absolute_data_files(config: dict[str, Any], base: Path) -> dict[str, Any]:
    kwargs = config.get("dataset_kwargs")
    if not isinstance(kwargs, dict):
        return config
    config = {**config, "dataset_kwargs": dict(kwargs)}
    kwargs = config["dataset_kwargs"]

    def absolute(value):
        if isinstance(value, str):
            return value if "://" in value or Path(value).is_absolute() else str(base / value)
        if isinstance(value, list):
            return [absolute(v) for v in value]
        if isinstance(value, dict):
            return {k: absolute(v) for k, v in value.items()}
        return value

    for key in ("data_files", "data_dir"):
        if key in kwargs:
            kwargs[key] = absolute(kwargs[key])
    return config


def _local_data_config(config: dict[str, Any], data: str) -> dict[str, Any]:
    """Point a task at local files: ``DIR`` (train.* and test.*/validation.*) or ``TRAIN,EVAL``."""
    parts = [p for p in data.split(",") if p]
    if len(parts) == 1 and Path(parts[0]).is_dir():
        folder = Path(parts[0])
        train = sorted(p for p in folder.iterdir() if p.stem == "train")
        evaluation = sorted(p for p in folder.iterdir() if p.stem in ("test", "validation", "eval"))
        if not train or not evaluation:
            raise TaskError(f"--icl-data folder {folder} needs a train.* file and a test.* (or validation.*) file")
        parts = [str(train[0]), str(evaluation[0])]
    if len(parts) != 2:
        raise TaskError(f"--icl-data expects TASK=DIR or TASK=TRAIN_FILE,EVAL_FILE, got {data!r}")
    paths = [Path(p).expanduser().resolve() for p in parts]
    for path in paths:
        if not path.is_file():
            raise TaskError(f"--icl-data: no such file {path}")
    builders = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
    suffixes = {p.suffix for p in paths}
    if len(suffixes) != 1 or next(iter(suffixes)) not in builders:
        raise TaskError(f"--icl-data files must both be .jsonl, .json, .csv or .parquet, got {[p.name for p in paths]}")
    config = {k: v for k, v in config.items() if k not in ("validation_split", "dataset_name", "custom_dataset")}
    config.update(
        dataset_path=builders[paths[0].suffix],
        dataset_kwargs={"data_files": {"train": str(paths[0]), "test": str(paths[1])}},
        training_split="train",
        fewshot_split="train",
        test_split="test",
    )
    return config


def _builtin_config(name: str) -> tuple[dict[str, Any], Path]:
    from lm_eval.tasks._yaml_loader import load_yaml

    entry = _builtin_manager().task_index.get(name)
    if entry is None or entry.yaml_path is None:
        raise TaskError(
            f"no task named {name!r}: not a YAML file in your task folders, nor an lm-eval built-in task. "
            "Give a YAML path, a folder of task YAMLs (icl_tasks ini option), or a built-in name such as 'sst2'."
        )
    return load_yaml(entry.yaml_path), Path(entry.yaml_path)


_BUILTIN_MANAGER = None


def _builtin_manager():
    # Indexing lm-eval's ~14k built-in YAMLs takes ~5 s: only done when a built-in name is asked for.
    global _BUILTIN_MANAGER
    if _BUILTIN_MANAGER is None:
        from lm_eval.tasks import TaskManager

        _BUILTIN_MANAGER = TaskManager()
    return _BUILTIN_MANAGER


def _lm_eval_config(source: TaskSource, data: str | None) -> dict[str, Any]:
    if source.config is not None:
        config = dict(source.config)
    elif source.path is not None:
        from lm_eval.tasks._yaml_loader import load_yaml

        try:
            config = load_yaml(source.path)
        except Exception as error:  # lm-eval raises bare ValueErrors/ImportErrors for bad files
            raise TaskError(f"{source.path}: lm-eval cannot read this task file: {error}") from None
        config = _absolute_data_files(config, source.path.parent)
    else:
        config, yaml_path = _builtin_config(source.name)
        config = _absolute_data_files(config, yaml_path.parent)
    config.pop("icl", None)
    # Tags and groups would register this config under other names; we build one task.
    config.pop("tag", None)
    if data:
        config = _local_data_config(config, data)
    return config


def _build_lm_eval_task(config: dict[str, Any], origin: str):
    from lm_eval.tasks import TaskManager

    try:
        loaded = TaskManager(include_defaults=False).load(config)
    except (ConnectionError, OSError) as error:
        raise TaskUnavailable(
            f"{origin}: its data cannot be loaded ({type(error).__name__}: {str(error).splitlines()[0]}). "
            "Download the dataset while online (it is then read from the Hugging Face cache), or run it "
            "on local files with --icl-data TASK=TRAIN_FILE,EVAL_FILE."
        ) from None
    except Exception as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        if "offline" in message.lower() or "couldn't reach" in message.lower():
            raise TaskUnavailable(f"{origin}: its data is not available offline ({message}).") from None
        raise TaskError(f"{origin}: lm-eval could not build this task: {type(error).__name__}: {message}") from None
    tasks = loaded["tasks"]
    if len(tasks) != 1:
        raise TaskError(f"{origin}: expected one task, lm-eval built {len(tasks)} ({', '.join(tasks)})")
    return next(iter(tasks.values()))


def _to_example(task, doc, origin: str) -> Example:
    text = task.doc_to_text(doc)
    choices = task.doc_to_choice(doc)
    target = task.doc_to_target(doc)
    if not isinstance(text, str):
        raise TaskError(f"{origin}: doc_to_text gave {type(text).__name__}, expected a string")
    if not choices or not all(isinstance(c, str) and c for c in choices):
        raise TaskError(f"{origin}: doc_to_choice must give a list of non-empty strings, got {choices!r}")
    if isinstance(target, str) and not target.isdigit():
        if target not in choices:
            raise TaskError(f"{origin}: target {target!r} is not one of the choices {choices}")
        target = choices.index(target)
    target = int(target)
    if not 0 <= target < len(choices):
        raise TaskError(f"{origin}: label {target} is out of range for {len(choices)} choices {choices}")
    return Example(text=text, choices=tuple(choices), gold=target)


def _shuffled(docs, seed: int) -> list:
    # Dai et al. shuffle with datasets' Dataset.shuffle(seed); lists (custom splits) use random.
    if hasattr(docs, "shuffle") and hasattr(docs, "select"):
        return list(docs.shuffle(seed=seed))
    docs = list(docs)
    random.Random(seed).shuffle(docs)
    return docs


def _hash(config: dict[str, Any], demonstrations, eval_examples) -> str:
    # Data file paths are left out: where a checkout lives must not change the hash (a baseline
    # committed on one machine must match on another); the data is in the hash as the examples.
    kwargs = {k: v for k, v in (config.get("dataset_kwargs") or {}).items() if k not in ("data_files", "data_dir")}
    config = {**config, "dataset_kwargs": kwargs}
    payload = json.dumps(
        {
            "config": {k: v for k, v in config.items() if k != "custom_dataset"},
            "demonstrations": [vars(e) for e in demonstrations],
            "eval": [vars(e) for e in eval_examples],
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _eval_split(task, split: str | None, origin: str):
    if split is None:
        return task.eval_docs
    if split != "validation":
        raise TaskError(f"{origin}: unknown split {split!r}; give 'validation' or none (the task's eval split)")
    if not task.has_validation_docs():
        raise TaskError(
            f"{origin}: no validation split to choose hyper-parameters on; add validation_split "
            "(and its data file) to the task YAML"
        )
    return task.validation_docs()


def _eval_examples(task, docs, demonstrations, limit: int | None, origin: str) -> tuple[Example, ...]:
    """The first ``limit`` eval examples that are not demonstrations.

    An eval example whose prompt is also a demonstration's would have its answer in the ICL
    context (a leak: lm-eval #4145), and FT would have trained on it. It is left out with a
    warning, so ``limit`` still counts clean examples; real datasets do repeat sentences across
    splits, and a local copy may point train and eval at the same file.
    """
    shown = {d.text for d in demonstrations}
    examples, leaked = [], 0
    for doc in docs:
        if limit is not None and len(examples) == limit:
            break
        example = _to_example(task, doc, origin)
        if example.text in shown:
            leaked += 1
        else:
            examples.append(example)
    if leaked:
        warnings.warn(
            TaskWarning(f"{origin}: left out {leaked} eval example(s) whose prompt is also a demonstration's"),
            stacklevel=3,
        )
    if not examples:
        raise TaskError(
            f"{origin}: the eval split is empty" + (" once the examples that are also demonstrations are left out" if leaked else "")
        )
    return tuple(examples)


def load_task(
    source: TaskSource,
    *,
    shots: int | None = None,
    seed: int | None = None,
    lr: float | None = None,
    position: str | None = None,
    limit: int | None = None,
    data: str | None = None,
    split: str | None = None,
) -> IclTask:
    """Build the task through lm-eval and freeze its demonstrations and eval examples.

    ``split="validation"`` scores the task's validation split instead of its eval split (test,
    else validation): the split hyper-parameters are chosen on (``pytest_icl.tune``).
    """
    settings = TaskSettings.from_mapping(source.settings, origin=source.origin)
    overrides = {k: v for k, v in dict(shots=shots, seed=seed, lr=lr, position=position).items() if v is not None}
    settings = TaskSettings.from_mapping({**vars(settings), **overrides}, origin=source.origin)
    go_offline_if_hub_unreachable()  # before datasets is imported: it reads the variables at import
    config = _lm_eval_config(source, data)
    task = _build_lm_eval_task(copy.copy(config), source.origin)
    if task.OUTPUT_TYPE != "multiple_choice":
        raise TaskError(
            f"{source.origin}: output_type is {task.OUTPUT_TYPE!r}; pytest-icl compares answer choices, "
            "so the task must be 'multiple_choice' (with doc_to_choice)."
        )
    pool = task.fewshot_docs()
    if pool is None or len(pool) == 0:
        raise TaskError(f"{source.origin}: no few-shot split (set training_split or fewshot_split)")
    if len(pool) < settings.shots:
        raise TaskError(f"{source.origin}: {settings.shots} shots asked, but the few-shot split has only {len(pool)} examples")
    demonstrations = tuple(_to_example(task, d, source.origin) for d in _shuffled(pool, settings.seed)[: settings.shots])
    eval_examples = _eval_examples(task, _shuffled(_eval_split(task, split, source.origin), 1), demonstrations, limit, source.origin)
    description = task.config.description or ""
    return IclTask(
        name=source.name,
        description=description if isinstance(description, str) else str(description),
        target_delimiter=task.config.target_delimiter,
        fewshot_delimiter=task.config.fewshot_delimiter,
        demonstrations=demonstrations,
        eval_examples=eval_examples,
        settings=settings,
        config_hash=_hash(config, demonstrations, eval_examples),
    )
