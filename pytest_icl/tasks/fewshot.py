"""Which demonstrations a task shows: lm-eval's pool, sampler and k, held fixed for Dai et al.'s FT.

lm-eval picks the demonstrations itself (``ConfigurableTask.fewshot_docs`` and its sampler);
this module only decides the lm-eval config that makes that pick one fixed set, the same for
every eval document, because FT trains on one set (definitions §3):

* **k** is the YAML's ``num_fewshot``; ``metadata.icl.shots`` or ``--icl-shots`` override it,
  and a note says so (lm-eval itself would run ``num_fewshot``).
* **The set** is lm-eval's ``first_n`` sampler over the few-shot pool. The pool is the YAML's
  (``fewshot_split`` with its ``process_docs``), shuffled by pytest-icl's seed ``s`` through
  ``fewshot_config.process_docs: !function pytest_icl.tasks.fewshot.shuffle_seed_<s>``, which
  is ``Dataset.shuffle(seed=s)`` as in the official code. Seed 0 means no shuffle: the pool in
  the order the YAML gives it. So a task YAML states its draw, and lm-eval run on it shows the
  same demonstrations; draw ``s`` of the multi-draw analysis is that YAML with ``shuffle_seed_s``
  (:func:`lm_eval_yaml` writes it).
* The seed is ``--icl-seed`` (or a draw's), else ``metadata.icl.seed``, else the YAML's
  ``shuffle_seed_<s>``, else 0 for a ``first_n`` YAML (exactly what lm-eval shows) and 1 for a
  ``default``-sampler YAML. lm-eval's ``default`` sampler shows each eval document its own random
  set; pytest-icl replaces it by ``first_n`` over the seeded shuffle and a note says that lm-eval's
  own ICL accuracy on that YAML is not comparable. Other samplers are refused.
* **The prompts** are lm-eval's ``fewshot_context``: :func:`check_prompts` compares them with
  ``description + Σ(demonstration + fewshot_delimiter) + query`` and refuses a task where they differ.

Example::

    plan = plan_fewshot(config, source.settings, shots=None, seed=None, origin="t.yaml", split=None)
    plan.config["fewshot_config"]["process_docs"]     # ShuffledPool(1): repr pytest_icl.tasks.fewshot.shuffle_seed_1
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from pytest_icl.tasks.files import TaskDefinitionError, TaskError, TaskSettingsError, TaskSource, parse_setting, read_task_header

SHUFFLE = "shuffle_seed_"
_NAME = re.compile(rf"{SHUFFLE}([1-9][0-9]*)")
_TEXT = re.compile(rf"!function\s+{re.escape(__name__)}\.{SHUFFLE}([1-9][0-9]*)\s*")
DEFAULT_SHOTS = 16  # when neither the YAML (num_fewshot) nor the settings give k
DEFAULT_SEED = 1  # for a YAML whose own sampler draws per document: Dai et al.'s seeds are 1 to 7


class ShuffledPool:
    """``fewshot_config.process_docs``: the few-shot pool as ``Dataset.shuffle(seed)`` orders it.

    A callable object, not a closure, so that its ``repr`` (what lm-eval writes into its results
    and what the task's hash reads) names the seed instead of a memory address. ``after`` is the
    task's own ``process_docs``, run first: lm-eval's ``fewshot_config.process_docs`` replaces the
    task's rather than adding to it.
    """

    def __init__(self, seed: int, after: Any = None):
        self.seed, self.after = seed, after
        self.__name__ = self.__qualname__ = f"{SHUFFLE}{seed}"
        self.__module__ = __name__

    def __call__(self, dataset):
        docs = self.after(dataset) if self.after is not None else dataset
        if not (hasattr(docs, "shuffle") and hasattr(docs, "select")):
            raise TypeError(f"{self!r}: expected a datasets.Dataset to shuffle, got {type(docs).__name__}")
        # In memory: a read-only Hugging Face cache must not need an indices file; the order is the same.
        return docs.shuffle(seed=self.seed, keep_in_memory=True)

    def __repr__(self) -> str:
        after = f"(after={_qualified(self.after)})" if self.after is not None else ""
        return f"{__name__}.{SHUFFLE}{self.seed}{after}"

    def __eq__(self, other) -> bool:
        return isinstance(other, ShuffledPool) and (other.seed, other.after) == (self.seed, self.after)

    def __hash__(self) -> int:
        return hash((ShuffledPool, self.seed))


def __getattr__(name: str) -> ShuffledPool:
    """PEP 562: lm-eval's ``!function pytest_icl.tasks.fewshot.shuffle_seed_7`` is ``ShuffledPool(7)``.

    There is no ``shuffle_seed_0``: seed 0 is the pool unshuffled, which is a YAML without it.
    """
    match = _NAME.fullmatch(name)
    if match and int(match[1]) < 2**32:
        return ShuffledPool(int(match[1]))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _qualified(value: Any) -> str:
    return repr(value) if isinstance(value, ShuffledPool) else f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', '?')}"


def pool_seed(process_docs: Any) -> int | None:
    """The seed of a ``fewshot_config.process_docs``: a :class:`ShuffledPool`, or its ``!function`` text
    as :func:`pytest_icl.tasks.files.read_task_header` keeps it; None for anything else."""
    if isinstance(process_docs, ShuffledPool):
        return process_docs.seed
    match = _TEXT.fullmatch(process_docs) if isinstance(process_docs, str) else None
    return int(match[1]) if match else None


@dataclass(frozen=True)
class FewshotPlan:
    shots: int
    seed: int
    config: dict[str, Any]  # the lm-eval config whose first_n sampler gives exactly these demonstrations
    pool: str  # "the first 16 of split 'train' shuffled with seed 1"
    notes: tuple[str, ...]  # where pytest-icl departs from lm-eval run on the YAML as written


def _eval_split(config: dict[str, Any], split: str | None) -> str | None:
    if split is not None:
        return config.get("validation_split")
    return config.get("test_split") or config.get("validation_split")


def _shots(config: dict[str, Any], raw: dict[str, Any], shots: Any, origin: str) -> tuple[int, list[str]]:
    yaml_k = config.get("num_fewshot")
    if shots is not None:
        k, by = parse_setting("shots", shots, where="--icl-shots"), "--icl-shots / icl_shots"  # the flag or the ini key
    elif "shots" in raw:
        k, by = parse_setting("shots", raw["shots"], where=f"{origin}: icl.shots"), "metadata.icl.shots"
    elif isinstance(yaml_k, int) and not isinstance(yaml_k, bool) and yaml_k >= 1:
        return yaml_k, []
    else:
        k, by = DEFAULT_SHOTS, "pytest-icl's default"
    if k == yaml_k:
        return k, []
    if not yaml_k:
        lm_eval = "its num_fewshot: 0 also ignores --num_fewshot, so edit the YAML" if yaml_k == 0 else f"give --num_fewshot {k}"
        return k, [f"k = {k} ({by}); the YAML sets no num_fewshot, so lm-eval runs it zero-shot ({lm_eval} to compare)"]
    return k, [f"k = {k} ({by}); the YAML's num_fewshot is {yaml_k}, which lm-eval runs unless given --num_fewshot {k}"]


def _pool_split(config: dict[str, Any], fewshot: dict[str, Any], origin: str, scored: str | None) -> str | None:
    """The split the demonstrations come from, as ``Task.fewshot_docs`` finds it (None: listed ``samples``)."""
    split = config.get("fewshot_split")
    if split is None and fewshot.get("samples") is None:
        split = config.get("training_split") or config.get("validation_split") or config.get("test_split")
    if split is not None and split == scored:
        raise TaskDefinitionError(
            f"{origin}: the demonstrations come from split {split!r}, the split that is scored. lm-eval then leaves each "
            "eval document out of its own demonstrations, so there is no one set for FT to train on (Dai et al.); "
            "set fewshot_split (or training_split) to another split, e.g. train."
        )
    return split


def plan_fewshot(config: dict[str, Any], raw: dict[str, Any], *, shots: Any, seed: Any, origin: str, split: str | None) -> FewshotPlan:
    """The lm-eval config that gives one fixed set of demonstrations, with k and the seed.

    ``raw`` is the task's ``metadata.icl``; ``shots``/``seed`` the overrides (None: none);
    ``split`` is None or "validation" (the split scored, see :func:`pytest_icl.tasks.loading.load_task`).
    """
    k, notes = _shots(config, raw, shots, origin)
    fewshot = dict(config.get("fewshot_config") or {})
    sampler = fewshot.get("sampler", "default")
    if sampler not in ("first_n", "default"):
        name = sampler if isinstance(sampler, str) else _qualified(sampler)
        raise TaskDefinitionError(
            f"{origin}: fewshot_config.sampler {name!r} decides per eval document which demonstrations it shows, and "
            "Dai et al.'s FT needs one fixed set: use 'sampler: first_n' (pytest-icl then shuffles the pool with its seed)."
        )
    current = fewshot.get("process_docs")
    own = pool_seed(current)
    if seed is not None:
        s = parse_setting("seed", seed, where="--icl-seed")
    elif "seed" in raw:
        s = parse_setting("seed", raw["seed"], where=f"{origin}: icl.seed")
        if own is not None and s != own:
            raise TaskSettingsError(
                f"{origin}: icl.seed is {s} but fewshot_config.process_docs shuffles the pool with seed {own} "
                f"({SHUFFLE}{own}), which is what lm-eval uses. Delete icl.seed, or make the two agree."
            )
    else:
        s = own if own is not None else 0 if sampler == "first_n" else DEFAULT_SEED
    pool_split = _pool_split(config, fewshot, origin, _eval_split(config, split))
    if pool_split is None and s:
        raise TaskSettingsError(
            f"{origin}: fewshot_config.samples lists the demonstrations, so pytest-icl can take them as listed "
            f"(seed 0) but cannot draw others with seed {s}; give a fewshot_split to draw from instead."
        )
    yaml_order = f"the pool shuffled with seed {own}" if own is not None else "the pool in file order"
    if sampler == "default":
        notes.append(
            f"demonstrations: this YAML's sampler (default) shows every eval document its own random {k}, so lm-eval's "
            "ICL accuracy on it is not comparable; Dai et al.'s FT needs one set, and pytest-icl uses first_n over "
            + (f"the pool shuffled with seed {s}" if s else "the pool in file order")
        )
    elif s != (own or 0):
        notes.append(f"demonstrations: seed {s}; lm-eval run on the YAML as written takes the first {k} of {yaml_order}")
    base = current.after if isinstance(current, ShuffledPool) else None if own is not None else current
    if base is None and config.get("process_docs") is not None:
        base = config["process_docs"]  # inherited by the pool unless fewshot_config replaces it
    if s:
        fewshot["process_docs"] = ShuffledPool(s, after=base)
    elif base is not None and current is not None:
        fewshot["process_docs"] = base
    else:
        fewshot.pop("process_docs", None)
    fewshot["sampler"] = "first_n"
    planned = {**config, "fewshot_config": fewshot, "num_fewshot": k}
    if pool_split is not None:
        planned["fewshot_split"] = pool_split
    where = f"split {pool_split!r}" if pool_split is not None else "fewshot_config.samples"
    pool = f"the first {k} of {where}" + (f" shuffled with seed {s}" if s else " in file order")
    return FewshotPlan(k, s, planned, pool, tuple(notes))


def header_notes(source: TaskSource, *, shots: Any = None, seed: Any = None) -> tuple[str, ...]:
    """The notes :func:`plan_fewshot` gives ``source``, read from its YAML without lm-eval (for a report header).

    () for a built-in task (its YAML is read only when it loads) and for a task that cannot be
    planned (its error is reported when it loads).
    """
    if source.path is not None:
        config = read_task_header(source.path)
    elif source.config is not None:
        config = source.config
    else:
        return ()
    try:
        return plan_fewshot(config, source.settings, shots=shots, seed=seed, origin=source.origin, split=None).notes
    except TaskError:
        return ()


# ---- lm-eval's pick, and its prompts


def fixed_demonstrations(task, k: int, origin: str) -> list:
    """lm-eval's own ``first_n`` pick: the first k of its pool (the same for every eval document)."""
    from lm_eval.api.samplers import FirstNSampler

    if getattr(task, "multiple_input", False):
        raise TaskDefinitionError(
            f"{origin}: doc_to_text picks one of the choices (a multiple-input task); pytest-icl needs one prompt per example"
        )
    if type(task.sampler) is not FirstNSampler:  # plan_fewshot asked for first_n: anything else is not lm-eval 0.4's
        raise TaskDefinitionError(f"{origin}: lm-eval built sampler {type(task.sampler).__name__}, not first_n")
    pool = task.sampler.df
    if len(pool) < k:
        raise TaskSettingsError(f"{origin}: {k} shots asked, but the few-shot split has only {len(pool)} examples")
    return list(task.sampler.sample(n=k))


_FULLY_CHECKED = 32  # documents whose whole prompt is compared; the rest have only their own parts compared


def check_prompts(lm_task, task, docs, origin: str) -> None:
    """Every ICL prompt is lm-eval's ``fewshot_context`` for the same document, character for character.

    pytest-icl needs the prompt in pieces (description, demonstrations, query) to find the
    demonstrations' tokens and to train FT on them. A task where lm-eval's prompt is not those
    pieces joined (a per-document description, demonstrations with delimiters of their own in
    ``fewshot_config``, a ``gen_prefix``) is refused, not approximated.

    Rendering the k demonstrations again for each of thousands of documents takes minutes, and
    under ``first_n`` with the pool apart from the scored split they do not depend on the
    document: so the first documents and the last are compared whole, and every document's own
    parts (its description and gen_prefix) are compared for all.
    """
    k = task.settings.shots
    description = lm_task.config.description
    for index, (doc, example) in enumerate(zip(docs, task.eval_examples)):
        prefix = lm_task.doc_to_prefix(doc)  # as build_all_requests passes it
        if index < _FULLY_CHECKED or index == len(docs) - 1:
            theirs, ours = lm_task.fewshot_context(doc, k, gen_prefix=prefix), task.prompt(example)
        else:  # the query is doc_to_text(doc) on both sides already: what else may vary is checked
            theirs, ours = (lm_task.resolve_field(doc, description) or "") + (prefix or ""), task.description
        if theirs != ours:
            at = next((i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b), min(len(theirs), len(ours)))
            raise TaskDefinitionError(
                f"{origin}: lm-eval's prompt for eval document {index} is not description + demonstrations + query "
                f"(they part at character {at}: lm-eval {theirs[at : at + 40]!r}, pytest-icl {ours[at : at + 40]!r}). "
                "pytest-icl needs one description for all documents, and the demonstrations rendered with the task's own "
                "target_delimiter and fewshot_delimiter, without gen_prefix; change the YAML to that."
            )


# ---- the same draw in lm-eval

_CHANGED = ("num_fewshot", "fewshot_split", "fewshot_config", "dataset_path", "dataset_name", "dataset_kwargs",
            "training_split", "validation_split", "test_split")  # fmt: skip


def _yaml_value(value: Any, indent: int) -> str:
    pad = "  " * indent
    if isinstance(value, dict) and value:
        return "".join(f"\n{pad}{key}:{_inline(_yaml_value(v, indent + 1))}" for key, v in value.items())
    if isinstance(value, (list, tuple)) and value and any(isinstance(v, (dict, list)) for v in value):
        return "".join(f"\n{pad}-{_inline(_yaml_value(v, indent + 1))}" for v in value)
    if callable(value):
        return f"!function {_qualified(value)}"
    return json.dumps(value if not isinstance(value, tuple) else list(value))  # JSON scalars and flow lists are YAML


def _inline(text: str) -> str:
    return text if text.startswith("\n") else " " + text


def lm_eval_yaml(name: str, path: str | None, original: dict[str, Any], planned: dict[str, Any]) -> str:
    """A task YAML with which lm-eval shows exactly these demonstrations (for a report or a user).

    It includes the task file (``path``) and sets only what pytest-icl changed: k, the pool, and the
    data files as absolute paths. Its own task name keeps lm-eval's request cache, which is keyed by
    name and k, from reusing another draw's contexts. An inline task (no file) gets the keys alone.
    """
    lines = [f"# lm-eval shows the demonstrations pytest-icl uses: lm_eval --include_path <this folder> --tasks {name}"]
    if path is not None:
        lines += [f"include: {json.dumps(path)}", f"task: {json.dumps(name)}"]
    process = (planned.get("fewshot_config") or {}).get("process_docs")
    if isinstance(process, ShuffledPool) and process.after is not None:
        lines.append(f"# write a process_docs that runs {_qualified(process.after)} and then {SHUFFLE}{process.seed}")
    for key in _CHANGED:
        if key in planned and (planned[key] != original.get(key) or key in ("num_fewshot", "fewshot_config")):
            lines.append(f"{key}:{_inline(_yaml_value(planned[key], 1))}")
        elif key in original and key not in planned:
            lines.append(f"{key}: null")
    return "\n".join(lines) + "\n"
