"""Shards over machines: which model × task pairs shard ``I`` of ``N`` runs. Pure: no I/O, no pytest.

    shard = resolve_shard(option_value, os.environ)   # None: not sharded
    mine = select(pairs, shard)                         # this shard's pairs, grouped by model

**Where the shard comes from**, the first that applies:

1. ``--icl-shard I/N``: shard ``I`` of ``N``, **0-based** (``0 ≤ I < N``), like
   ``JOB_COMPLETION_INDEX``. It overrides the environment, so ``0/1`` (one shard: everything)
   turns an array job's sharding off.
2. ``--icl-shard N`` (a count alone): the index comes from the environment (2 or 3 below).
3. A Slurm array job: ``SLURM_ARRAY_TASK_ID`` with ``SLURM_ARRAY_TASK_COUNT``; the index is
   ``(ID − SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP``, so ``--array=1-4`` and
   ``--array=0-30:10`` both give 0…N−1.
4. A Kubernetes indexed Job: ``JOB_COMPLETION_INDEX``. Kubernetes does not tell the pod the
   Job's ``completions``, so the count must come from ``--icl-shard N``; the index alone shards
   nothing (an indexed Job may use its index for something else, and running every pair is
   slow but never wrong).

**The assignment rule.** The pairs are deduplicated and sorted by (model, task) as strings; the
sorted list is cut into ``N`` contiguous runs whose lengths differ by at most one, and shard
``I`` takes run ``I``. So:

* it depends only on the *set* of pairs, never on their order (the order of ``--icl-model`` or
  of collection), and every shard computes the same cut without talking to the others;
* shards are balanced to one pair;
* a model's pairs are contiguous in the sorted list, so a shard holds each of its models as one
  group (loaded once) and a model is split over shards only where balance needs it: at most
  ``models + N − 1`` model loads in all, where hashing each pair would load every model on every
  shard.

The price of contiguous runs: every shard must see the same set of pairs (the same command,
the same task files). :func:`fingerprint` names the set; the plugin records it in each shard's
store manifest and ``python -m pytest_icl merge`` refuses shards whose sets differ.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pytest_icl.errors import OptionError

Pair = tuple[str, str]  # (model as the command line names it, task name)

SLURM_ID, SLURM_COUNT, SLURM_MIN, SLURM_STEP = (
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_COUNT",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_STEP",
)
K8S_INDEX = "JOB_COMPLETION_INDEX"


@dataclass(frozen=True)
class Shard:
    index: int  # 0-based
    count: int
    origin: str = "--icl-shard"  # where the index came from, for messages and the header line

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def description(self) -> str:
        return f"shard {self} (from {self.origin})"


def _integer(text: str, what: str, origin: str) -> int:
    try:
        return int(str(text).strip())
    except ValueError:
        raise OptionError(f"{origin}: {what} must be a whole number, got {text!r}; write the shard as I/N, e.g. 0/4") from None


def parse_shard(text: str, origin: str = "--icl-shard") -> Shard:
    """``"I/N"`` as a :class:`Shard`; :class:`OptionError` naming ``origin`` when it is not one."""
    index_text, sep, count_text = str(text).partition("/")
    if not sep:
        raise OptionError(
            f"{origin}: expected I/N (shard I of N, 0-based: 0/4 … 3/4) or a count N with the index from the environment, got {text!r}"
        )
    return _checked(_integer(index_text, "the shard index", origin), _integer(count_text, "the number of shards", origin), origin)


def _checked(index: int, count: int, origin: str) -> Shard:
    if count < 1:
        raise OptionError(f"{origin}: the number of shards must be at least 1, got {count}")
    if not 0 <= index < count:
        raise OptionError(
            f"{origin}: shard index {index} is outside 0…{count - 1}; shards count from 0 (as JOB_COMPLETION_INDEX does), "
            f"so the shards of {count} are 0/{count} … {count - 1}/{count}"
        )
    return Shard(index, count, origin)


def _slurm_index(environ: Mapping[str, str]) -> tuple[int, str] | None:
    if SLURM_ID not in environ:
        return None
    task_id = _integer(environ[SLURM_ID], SLURM_ID, SLURM_ID)
    low = _integer(environ.get(SLURM_MIN, "0"), SLURM_MIN, SLURM_MIN)
    step = max(_integer(environ.get(SLURM_STEP, "1"), SLURM_STEP, SLURM_STEP), 1)
    if (task_id - low) % step:
        raise OptionError(
            f"{SLURM_ID}={task_id} is not on the array's grid (min {low}, step {step}), so it names no shard; "
            "give each array task its shard with --icl-shard I/N"
        )
    return (task_id - low) // step, f"{SLURM_ID}={task_id}"


def _environment_index(environ: Mapping[str, str]) -> tuple[int, str] | None:
    if K8S_INDEX in environ:
        return _integer(environ[K8S_INDEX], K8S_INDEX, K8S_INDEX), f"{K8S_INDEX}={environ[K8S_INDEX]}"
    return _slurm_index(environ)


def resolve_shard(value: str | None, environ: Mapping[str, str]) -> Shard | None:
    """This process's shard from ``--icl-shard`` (``I/N``, ``N`` or None) and the environment; None: all pairs."""
    if value is not None and "/" in str(value):
        return parse_shard(value)
    if value is not None:
        count = _integer(value, "the number of shards", "--icl-shard")
        found = _environment_index(environ)
        if found is None:
            raise OptionError(
                f"--icl-shard {value}: a count alone takes the shard index from {K8S_INDEX} or {SLURM_ID}, and neither is set; "
                f"give the index too (--icl-shard I/{value}, 0-based)"
            )
        return _checked(found[0], count, found[1])
    if SLURM_ID in environ and SLURM_COUNT in environ:
        index, origin = _slurm_index(environ)
        return _checked(index, _integer(environ[SLURM_COUNT], SLURM_COUNT, SLURM_COUNT), origin)
    return None  # JOB_COMPLETION_INDEX alone: no count, so no sharding (see the module's notes)


# ---- the assignment


def canonical(pairs: Iterable[Pair]) -> list[Pair]:
    """The pairs deduplicated and sorted: what the assignment sees, whatever order they came in."""
    return sorted({(str(model), str(task)) for model, task in pairs})


def plan(pairs: Iterable[Pair], count: int) -> list[list[Pair]]:
    """Every shard's pairs: ``count`` contiguous runs of the sorted pairs, lengths within one of each other."""
    if count < 1:
        raise ValueError(f"the number of shards must be at least 1, got {count}")
    ordered = canonical(pairs)
    total = len(ordered)
    # Run i is [floor(i·total/count), floor((i+1)·total/count)): integer cuts, the same on every machine.
    return [ordered[index * total // count : (index + 1) * total // count] for index in range(count)]


def assign(pairs: Iterable[Pair], count: int) -> dict[Pair, int]:
    """pair -> the index of the shard that runs it."""
    return {pair: index for index, run in enumerate(plan(pairs, count)) for pair in run}


def select(pairs: Iterable[Pair], shard: Shard | None) -> list[Pair]:
    """This shard's pairs, grouped by model (models in the order they first came, tasks in theirs).

    Grouping here, not only in the scheduler, is what lets one process load each of its models
    once when it runs the pairs in the returned order.
    """
    given = list(dict.fromkeys((str(model), str(task)) for model, task in pairs))
    mine = set(given) if shard is None else set(plan(given, shard.count)[shard.index])
    models = list(dict.fromkeys(model for model, _ in given))
    return [pair for model in models for pair in given if pair[0] == model and pair in mine]


def model_loads(shards: list[list[Pair]]) -> int:
    """How many times the shards load a model in all (each shard loads each of its models once)."""
    return sum(len({model for model, _ in run}) for run in shards)


def fingerprint(pairs: Iterable[Pair]) -> str:
    """A short name of the set of pairs: shards that disagree on it cut the list differently."""
    return hashlib.sha256(json.dumps(canonical(pairs)).encode("utf-8")).hexdigest()[:16]
