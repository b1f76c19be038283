"""The key of a pair: which results are the same experiment (a store keeps one result per key).

:func:`make_key` builds it before a pair runs, :func:`key_of` from the finished row; its fields:

* ``model``: the weights' sha256 (the same weights under another name or alias are the same
  model), else ``model_id@revision``;
* ``task`` and ``task_hash``: the name and the hash of its config, demonstrations and eval
  examples (a changed task file or data file is a new key);
* ``dtype``; ``shots``, ``seed``, ``position``;
* ``lr`` *as asked*: the number, or ``"auto"`` when lr: auto chose it (the choice is
  deterministic), so a run can compute the key before it knows the chosen lr;
* ``draws`` (demonstration draws), ``shuffled`` (whether FT on shuffled labels ran beside each
  draw) and ``controls`` (the opt-in controls that ran, ``seeds:S`` with S seeds): a row with
  more or fewer runs in it is not the row asked for.

Left out, on purpose: the eval count (the task hash holds the eval examples, so ``--icl-limit``
is in it, and draws can leave examples out only after the key is needed); the device and the
batch size (the same experiment, to float rounding); the versions and the run-level settings
(the manifest's, equal for every pair of a folder).

Example::

    key = make_key(model=lm.weights_hash, task=task.name, task_hash=task.config_hash, dtype="float32",
                   shots=4, seed=1, lr="auto", position="label", draws=3, shuffled=True)
    store.has(key)     # before running the pair
    key_of(row) == key  # after it: the same key from the finished row
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

#: lr_source values that mean lr: auto chose the lr (the rows' table marks them the same way).
AUTO_LR_SOURCES = ("validation", "cache")

KEY_FIELDS = ("model", "task", "task_hash", "dtype", "shots", "seed", "lr", "position", "draws", "shuffled", "controls")

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


@dataclass(frozen=True)
class PairKey:
    """What makes two results the same experiment (the fields of :data:`KEY_FIELDS`)."""

    fields: tuple[tuple[str, Any], ...]

    @property
    def id(self) -> str:
        """16 hex digits of the canonical JSON's sha256: the file name's unique part."""
        text = json.dumps(dict(self.fields), sort_keys=True, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    @property
    def name(self) -> str:
        """The pair's file stem under ``pairs/``: the task for people, the key id for uniqueness."""
        return f"{safe(str(dict(self.fields)['task']))}-{self.id}"

    def as_dict(self) -> dict[str, Any]:
        return dict(self.fields)


def safe(text: str) -> str:
    """``text`` as a file-name part (letters, digits, ``._+-``)."""
    return _UNSAFE.sub("-", text).strip("-.") or "x"


def controls_field(controls: dict[str, Any] | list[str] | tuple[str, ...] | None, seeds: int | None = None) -> list[str]:
    """The key's controls: sorted names, ``seeds:S`` for the seeds control run with S seeds.

    Takes a row's ``controls`` (name -> entry; S is its seed list's length) or the names a run
    asks for with ``seeds``.
    """
    found = []
    for name in sorted(controls or ()):
        if name == "seeds":
            entry = controls.get(name) if isinstance(controls, dict) else None
            count = len(entry["seeds"]) if isinstance(entry, dict) and "seeds" in entry else seeds
            found.append(f"seeds:{count}")
        else:
            found.append(name)
    return found


def make_key(
    *, model: str, task: str, task_hash: str, dtype: str, shots: int, seed: int, lr: float | str, position: str,
    draws: int = 1, shuffled: bool = False, controls: list[str] | tuple[str, ...] = (),
) -> PairKey:  # fmt: skip
    """The key of a pair before it runs (``model``: the weights hash, else ``model_id@revision``)."""
    values = {
        "model": model, "task": task, "task_hash": task_hash, "dtype": dtype, "shots": shots, "seed": seed,
        "lr": lr if isinstance(lr, str) else float(lr), "position": position, "draws": int(draws),
        "shuffled": bool(shuffled), "controls": tuple(controls),
    }  # fmt: skip
    return PairKey(tuple((name, values[name]) for name in KEY_FIELDS))


def model_field(row: dict[str, Any]) -> str:
    return row.get("weights_hash") or f"{row['model_id']}@{row.get('revision')}"


def key_of(row: dict[str, Any]) -> PairKey:
    """The key of a finished row."""
    return make_key(
        model=model_field(row), task=row["task"], task_hash=row["task_hash"], dtype=row["dtype"], shots=row["shots"],
        seed=row["seed"], lr="auto" if row.get("lr_source") in AUTO_LR_SOURCES else row["lr"], position=row["position"],
        draws=row.get("draws") or (row.get("counts") or {}).get("draws") or 1, shuffled=bool(row.get("shuffled_control")),
        controls=controls_field(row.get("controls")),
    )  # fmt: skip


def describe(row: dict[str, Any]) -> str:
    """A pair as people name it: ``model_id-task`` (dtype, k, seed)."""
    return f"{row.get('model_id')}-{row.get('task')} ({row.get('dtype')}, k={row.get('shots')}, seed {row.get('seed')})"
