"""ICL tasks from lm-eval task definitions: built-in names, YAML files, or inline examples.

lm-eval does the dataset loading, the choice of demonstrations and the rendering; this module
fixes the few-shot config so that lm-eval's pick is one set for every eval document
(:mod:`pytest_icl.tasks.fewshot`), and freezes what lm-eval gives into a plain :class:`IclTask`.
Reading task files without lm-eval (names, settings, which YAMLs are tasks) is
:mod:`pytest_icl.tasks.files`; its names are re-exported here.

* Demonstrations: ``task.sampler.sample(k)`` of lm-eval's ``first_n`` sampler over the few-shot
  pool, which ``fewshot_config.process_docs: shuffle_seed_<s>`` shuffles (definitions §3); the same
  fixed list for every eval example, for ICL and for FT.
* Eval examples: lm-eval's eval documents in lm-eval's order, the first ``limit`` of them, as
  ``lm_eval --limit N`` scores them. They do not depend on the seed, so every demonstration draw
  of a pair is scored on the same examples. One whose prompt is also a demonstration's is
  scored, as lm-eval scores it, and a warning counts them.
* Prompts: ``description + Σ(demo + fewshot_delimiter) + query``, checked for every eval example
  against lm-eval's own ``fewshot_context``; a task lm-eval renders otherwise is refused.

Relative ``data_files`` are relative to the YAML file. lm-eval itself resolves them against the
working directory; the shipped YAMLs therefore load their files through
``custom_dataset: !function pytest_icl.tasks.data.load_yaml_relative_files``, so that
``lm_eval --include_path tasks`` works from any folder too (see :mod:`pytest_icl.tasks.data`).

Example::

    task = load_task(TaskSource.from_path("tasks/antonym_choice/antonym_choice.yaml"), limit=32)
    task.prompt(task.eval_examples[0])
    task.notes          # where pytest-icl departs from lm-eval run on the YAML (k, the demonstrations)
    task.lm_eval_yaml   # a YAML with which lm-eval shows exactly these demonstrations
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pytest_icl.errors import NoValidationSplit  # noqa: F401 - defined in errors, used or re-exported here
from pytest_icl.models.loading import default_cache_root, go_offline_if_hub_unreachable
from pytest_icl.tasks.data import absolute_data_files, check_data_files, load_yaml_relative_files, local_data_config
from pytest_icl.tasks.fewshot import ShuffledPool, check_prompts, fixed_demonstrations, lm_eval_yaml, plan_fewshot
from pytest_icl.tasks.files import (  # noqa: F401 - re-exported: the public names of tasks
    AUTO_LR,
    MIN_EVAL_EXAMPLES,
    TaskDataMissing,
    TaskDefinitionError,
    TaskDeprecationWarning,
    TaskError,
    TaskSettings,
    TaskSettingsError,
    TaskSource,
    TaskUnavailable,
    TaskWarning,
    _stable,
    find_task,
    is_task_file,
    parse_setting,
    read_task_header,
)


@dataclass(frozen=True)
class Example:
    text: str  # the prompt for this example, without its answer (lm-eval's doc_to_text)
    choices: tuple[str, ...]
    gold: int

    @property
    def answer(self) -> str:
        return self.choices[self.gold]


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
    # Where the demonstrations come from ("the first 16 of split 'train' shuffled with seed 1"),
    # where pytest-icl departs from lm-eval run on the YAML as written (k, the sampler, the seed),
    # and a task YAML with which lm-eval shows exactly these demonstrations.
    draw: str = ""
    notes: tuple[str, ...] = ()
    lm_eval_yaml: str = ""

    def demonstration_text(self, example: Example) -> str:
        """One demonstration as ICL shows it and FT trains on it: query, delimiter, answer."""
        return example.text + self.target_delimiter + example.answer

    def context(self) -> str:
        return self.description + "".join(self.demonstration_text(d) + self.fewshot_delimiter for d in self.demonstrations)

    def prompt(self, example: Example, *, shots: bool = True) -> str:
        return (self.context() if shots else self.description) + example.text

    def with_lr(self, lr: float) -> IclTask:
        """The same task with a concrete FT lr (``lr: auto`` resolved by ``pytest_icl.engine.tune.choose_lr``)."""
        return replace(self, settings=replace(self.settings, lr=parse_setting("lr", lr, where=f"task {self.name!r}: lr")))


# ---- lm-eval's built-in tasks


def _builtin_index() -> dict[str, tuple[str, str | None]]:
    """name -> (kind, YAML path) of every lm-eval built-in task, group and tag.

    Indexing lm-eval's ~14k YAMLs takes ~5 s, so the index is kept as JSON in the pytest-icl
    cache (``lm-eval/index-<version>.json``), rebuilt when lm-eval's version or folder changes:
    later runs read it in milliseconds.
    """
    import importlib.util
    from importlib import metadata

    tasks_dir = str(Path(importlib.util.find_spec("lm_eval").submodule_search_locations[0]) / "tasks")
    cache = default_cache_root() / "lm-eval" / f"index-{metadata.version('lm_eval')}.json"
    try:
        stored = json.loads(cache.read_text())
        if stored["tasks_dir"] == tasks_dir:
            return {name: tuple(entry) for name, entry in stored["entries"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    from lm_eval.tasks import TaskManager

    entries = {
        name: (entry.kind.name, str(entry.yaml_path) if entry.yaml_path else None) for name, entry in TaskManager().task_index.items()
    }
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_name(f".{cache.name}.{os.getpid()}")
        partial.write_text(json.dumps({"tasks_dir": tasks_dir, "entries": entries}))
        os.replace(partial, cache)
    except OSError:
        pass  # a read-only cache only costs the next run the 5 s again
    return entries


def builtin_task_names() -> tuple[str, ...]:
    """Every lm-eval built-in task, group and tag name (~5 s the first time, then cached)."""
    return tuple(_builtin_index())


def builtin_task_exists(name: str) -> bool:
    """Whether lm-eval has a built-in task, group or tag ``name`` (~5 s the first time, then cached)."""
    return name in _builtin_index()


def _builtin_config(name: str) -> tuple[dict[str, Any], Path]:
    from lm_eval.tasks._yaml_loader import load_yaml

    kind, yaml_path = _builtin_index().get(name, (None, None))
    if kind is None:
        raise TaskDefinitionError(
            f"no task named {name!r}: not a YAML file in your task folders, nor an lm-eval built-in task. "
            "Give a YAML path, a folder of task YAMLs (icl_tasks ini option), or a built-in name such as 'sst2'."
        )
    if kind != "TASK" or yaml_path is None or not Path(yaml_path).is_file():
        raise TaskDefinitionError(
            f"lm-eval's {name!r} is a {kind.lower()}, not one task pytest-icl can build; name one of its tasks instead."
        )
    return load_yaml(yaml_path), Path(yaml_path)


# ---- building through lm-eval


def _lm_eval_config(source: TaskSource, data: str | None) -> tuple[dict[str, Any], dict[str, Any], Path | None]:
    """(the config as lm-eval reads the source, the config pytest-icl builds, the YAML file or None)."""
    base = yaml_path = None
    if source.config is not None:
        config = dict(source.config)
    elif source.path is not None:
        from lm_eval.tasks._yaml_loader import load_yaml

        try:
            config = load_yaml(source.path)
        except Exception as error:  # lm-eval raises bare ValueErrors/ImportErrors for bad files
            raise TaskDefinitionError(f"{source.path}: lm-eval cannot read this task file: {error}") from None
        yaml_path, base = source.path, source.path.parent
    else:
        config, yaml_path = _builtin_config(source.name)
    original = dict(config)
    if yaml_path is not None:
        config = absolute_data_files(config, yaml_path.parent)
    config = dict(config)
    config.pop("icl", None)
    if config.get("custom_dataset") is load_yaml_relative_files:
        del config["custom_dataset"]  # the data files are absolute already: lm-eval's own json/csv loading does the rest
    if isinstance(config.get("metadata"), dict):
        config["metadata"] = {k: v for k, v in config["metadata"].items() if k != "icl"}
    # Tags and groups would register this config under other names; we build one task.
    config.pop("tag", None)
    if config.get("output_type") == "multiple_choice" and config.get("doc_to_choice") is None:
        raise TaskDefinitionError(
            f"{source.origin}: this multiple_choice task has no doc_to_choice, and pytest-icl compares the model's "
            "scores of the answer choices. Add doc_to_choice: a list of label words (doc_to_choice: "
            '["negative", "positive"]), the name of a column holding each row\'s choices, or a Jinja template.'
        )
    if data:
        try:
            return original, local_data_config(config, data), yaml_path
        except TaskError as error:
            raise type(error)(f"{source.origin}: --icl-data {source.name}={data}: {error}") from None
    check_data_files(config, origin=source.origin, base=base)
    return original, config, yaml_path


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _inner(error: BaseException) -> BaseException:
    """The error under datasets' "An error occurred while generating the dataset": the one that says what."""
    while type(error).__name__ == "DatasetGenerationError" and error.__cause__ is not None:
        error = error.__cause__
    return error


def _data_files(config: dict[str, Any]) -> str:
    files = (config.get("dataset_kwargs") or {}).get("data_files")
    names = files.values() if isinstance(files, dict) else [files] if files else []
    return ", ".join(str(n) for value in names for n in (value if isinstance(value, list) else [value]))


def _build_lm_eval_task(config: dict[str, Any], origin: str):
    from lm_eval.tasks import TaskManager

    try:
        loaded = TaskManager(include_defaults=False).load(config)
    except FileNotFoundError as error:  # an OSError, but a missing file is a broken task, not an offline hub
        raise TaskDataMissing(f"{origin}: its data cannot be found: {_first_line(error)}") from None
    except (ConnectionError, OSError) as error:
        raise TaskUnavailable(
            f"{origin}: its data cannot be loaded ({type(error).__name__}: {_first_line(error)}). "
            "Download the dataset while online (it is then read from the Hugging Face cache), or run it on local "
            "files with --icl-data TASK=DIR (train.*, validation.*, test.*) or TASK=TRAIN_FILE,EVAL_FILE."
        ) from None
    except Exception as error:
        error = _inner(error)
        message = _first_line(error)
        if "offline" in message.lower() or "couldn't reach" in message.lower():
            raise TaskUnavailable(f"{origin}: its data is not available offline ({message}).") from None
        hint = f" (reading {files})" if (files := _data_files(config)) else ""
        if isinstance(error, IndexError) and "string index" in message:
            # lm-eval reads choice[0] of the first document's choices while building the task
            hint = ". lm-eval fails this way on an empty answer choice: make doc_to_choice give non-empty strings"
        raise TaskDefinitionError(f"{origin}: lm-eval could not build this task: {type(error).__name__}: {message}{hint}") from None
    tasks = loaded["tasks"]
    if len(tasks) != 1:
        raise TaskDefinitionError(f"{origin}: expected one task, lm-eval built {len(tasks)} ({', '.join(tasks)})")
    return next(iter(tasks.values()))


def _to_example(task, doc, origin: str, fewshot=None) -> Example:
    """``doc`` rendered by lm-eval: as an eval document, or with ``fewshot`` (``task.fewshot_cfg``) as a demonstration."""
    try:
        text = task.doc_to_text(doc, fewshot.doc_to_text) if fewshot else task.doc_to_text(doc)
        choices = task.doc_to_choice(doc, fewshot.doc_to_choice) if fewshot and fewshot.doc_to_choice else task.doc_to_choice(doc)
        target = task.doc_to_target(doc, fewshot.doc_to_target) if fewshot else task.doc_to_target(doc)
    except Exception as error:  # a template naming a missing column, a !function that raises, ...
        columns = ", ".join(doc) if isinstance(doc, dict) else type(doc).__name__
        raise TaskDefinitionError(
            f"{origin}: lm-eval could not render an example ({type(error).__name__}: {_first_line(error)}); "
            f"check doc_to_text, doc_to_choice and doc_to_target against the data's columns ({columns})."
        ) from None
    if not isinstance(text, str):
        raise TaskDefinitionError(f"{origin}: doc_to_text gave {type(text).__name__}, expected a string")
    if not isinstance(choices, (list, tuple)) or not choices or not all(isinstance(c, str) and c for c in choices):
        raise TaskDefinitionError(f"{origin}: doc_to_choice must give a list of non-empty strings, got {choices!r}")
    if len(choices) < 2:
        raise TaskDefinitionError(
            f"{origin}: doc_to_choice gave {len(choices)} choice {choices!r} for the prompt {text[-60:]!r}; pytest-icl compares "
            "the model's scores of the answer choices, so every example needs at least 2 (check the column or template)"
        )
    if isinstance(target, str) and not target.isdigit():
        if target not in choices:
            raise TaskDefinitionError(f"{origin}: target {target!r} is not one of the choices {choices}")
        target = choices.index(target)
    if isinstance(target, (list, tuple)) or not str(target).lstrip("-").isdigit():
        raise TaskDefinitionError(f"{origin}: doc_to_target must give one label (an index or a choice), got {target!r}")
    target = int(target)
    if not 0 <= target < len(choices):
        raise TaskDefinitionError(f"{origin}: label {target} is out of range for {len(choices)} choices {choices}")
    return Example(text=text, choices=tuple(choices), gold=target)


def _hash_default(value: Any) -> str:
    # A callable by its import name (a ShuffledPool by its seed), never by its memory address.
    return repr(value) if isinstance(value, ShuffledPool) else _stable(value)


def _hash(config: dict[str, Any], demonstrations, eval_examples) -> str:
    # Data file paths are left out: where a checkout lives must not change the hash (a baseline
    # committed on one machine must match on another); the data is in the hash as the examples.
    # So are the pytest-icl settings (metadata.icl: thresholds, expected failures do not change the task).
    kwargs = {k: v for k, v in (config.get("dataset_kwargs") or {}).items() if k not in ("data_files", "data_dir")}
    meta = {k: v for k, v in (config.get("metadata") or {}).items() if k not in ("icl", "config_source")}
    config = {**config, "dataset_kwargs": kwargs, "metadata": meta}
    payload = json.dumps(
        {
            "config": {k: v for k, v in config.items() if k != "custom_dataset"},
            "demonstrations": [vars(e) for e in demonstrations],
            "eval": [vars(e) for e in eval_examples],
        },
        sort_keys=True,
        default=_hash_default,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _eval_docs(task, split: str | None, limit: int | None, origin: str) -> list:
    """The first ``limit`` documents lm-eval scores, in its order (``Task.doc_iterator(limit=N)``)."""
    if split is None:
        docs = task.eval_docs
    elif split != "validation":
        raise TaskSettingsError(f"{origin}: unknown split {split!r}; give 'validation' or none (the task's eval split)")
    elif not task.has_validation_docs():
        raise NoValidationSplit(
            f"{origin}: no validation split to choose hyper-parameters on; add validation_split "
            "(and its data file) to the task YAML, or give --icl-data a validation file"
        )
    else:
        docs = task.validation_docs()
    docs = list(itertools.islice(docs, limit))  # iterating a Dataset gives its rows, as lm-eval's doc_iterator does
    if len(docs) < MIN_EVAL_EXAMPLES:
        raise TaskDefinitionError(
            f"{origin}: the {split or 'eval'} split has {len(docs)} example(s), and a verdict needs at least {MIN_EVAL_EXAMPLES}: "
            "its interval resamples the eval examples, and one example would decide a property alone. Add eval rows"
        )
    return docs


def _warn_leaks(demonstrations, eval_examples, origin: str) -> None:
    """lm-eval scores an eval document even when its prompt is a demonstration's; so does pytest-icl, and says so.

    Its answer is then in the ICL context (lm-eval #4145) and FT trained on it, so ICL and FT both
    have it easy there. Real datasets repeat sentences across splits, and a local copy may point
    train and eval at the same file.
    """
    shown = {d.text for d in demonstrations}
    leaked = sum(e.text in shown for e in eval_examples)
    if leaked:
        warnings.warn(
            TaskWarning(
                f"{origin}: {leaked} of {len(eval_examples)} eval examples have the same prompt as a demonstration, so "
                "their answer is in the ICL context and FT trained on it; they are scored, as lm-eval scores them"
            ),
            stacklevel=3,
        )


def task_settings(source: TaskSource, **overrides: Any) -> TaskSettings:
    """The task's settings with the non-None overrides (``shots=``, ``seed=``, ``lr=``, ``position=``).

    An override's error names its option (``--icl-shots``), a file setting's error names the file.
    k and the seed as a loaded task has them also depend on the YAML (:func:`load_task`).
    """
    parsed = {k: parse_setting(k, v, where=f"--icl-{k}") for k, v in overrides.items() if v is not None}
    return replace(TaskSettings.from_mapping(source.settings, origin=source.origin), **parsed)


def load_task(
    source: TaskSource,
    *,
    shots: int | None = None,
    seed: int | None = None,
    lr: float | str | None = None,
    position: str | None = None,
    limit: int | None = None,
    data: str | None = None,
    split: str | None = None,
) -> IclTask:
    """Build the task through lm-eval and freeze its demonstrations and eval examples.

    k is ``shots``, else ``metadata.icl.shots``, else the YAML's ``num_fewshot``; ``seed`` picks
    the demonstration draw (:mod:`pytest_icl.tasks.fewshot`: 0 is the pool unshuffled, s the pool
    shuffled with ``shuffle_seed_s``) and never changes the eval examples. ``limit`` takes
    lm-eval's first N eval documents (``lm_eval --limit N``). ``split="validation"`` scores the
    task's validation split instead of its eval split (test, else validation): the split
    hyper-parameters are chosen on (``pytest_icl.engine.tune``). ``lr`` may be ``"auto"``; the
    task then keeps ``settings.lr == "auto"`` until ``IclTask.with_lr``.
    """
    settings = task_settings(source, lr=lr, position=position)
    limit = None if limit is None else parse_setting("limit", limit, where="--icl-limit")
    go_offline_if_hub_unreachable()  # before datasets is imported: it reads the variables at import
    original, config, yaml_path = _lm_eval_config(source, data)
    plan = plan_fewshot(config, source.settings, shots=shots, seed=seed, origin=source.origin, split=split)
    settings = replace(settings, shots=plan.shots, seed=plan.seed)
    task = _build_lm_eval_task(copy.copy(plan.config), source.origin)
    if task.OUTPUT_TYPE != "multiple_choice":
        raise TaskDefinitionError(
            f"{source.origin}: output_type is {task.OUTPUT_TYPE!r}; pytest-icl compares answer choices, "
            "so the task must be 'multiple_choice' (with doc_to_choice)."
        )
    if not getattr(task, "sampler", None) or not task.sampler.df:  # lm-eval makes no sampler without a pool
        raise TaskDefinitionError(f"{source.origin}: no few-shot split (set training_split or fewshot_split)")
    demonstrations = tuple(
        _to_example(task, d, source.origin, task.fewshot_cfg) for d in fixed_demonstrations(task, plan.shots, source.origin)
    )
    docs = _eval_docs(task, split, limit, source.origin)
    eval_examples = tuple(_to_example(task, d, source.origin) for d in docs)
    description = task.resolve_field(docs[0], task.config.description) or ""
    frozen = IclTask(
        name=source.name,
        description=description if isinstance(description, str) else str(description),
        target_delimiter=task.config.target_delimiter,
        fewshot_delimiter=task.config.fewshot_delimiter,
        demonstrations=demonstrations,
        eval_examples=eval_examples,
        settings=settings,
        config_hash=_hash(plan.config, demonstrations, eval_examples),
        draw=plan.pool,
        notes=plan.notes,
        lm_eval_yaml=lm_eval_yaml(
            f"{source.name}_k{plan.shots}_seed{plan.seed}", str(yaml_path) if yaml_path else None, original, plan.config
        ),
    )
    check_prompts(task, frozen, docs, source.origin)
    _warn_leaks(demonstrations, eval_examples, source.origin)
    return frozen
