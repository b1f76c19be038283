"""Resuming from a report store: a pair's key before it runs, and a stored pair standing in for a computed one.

Before a generated item's pair is computed, the session builds its key (:func:`pair_key`, the same
fields :func:`pytest_icl.report.keys.key_of` reads from the finished row) and asks the
``--icl-report`` store whether it holds that pair. When it does (and ``--icl-rerun`` was not
given), the items read their outcomes from the stored row (:class:`StoredResult`): a property
from ``row["verdicts"]`` with the same outcome and message as the computed verdict, a control
from the stored item outcome and gates. Only the generated items resume; a user test that asks
for ``icl_analysis`` gets a computed analysis (it may read anything in it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from pytest_icl import catalogue
from pytest_icl.report.keys import PairKey, controls_field, make_key


def pair_key(lm, task, settings) -> PairKey:
    """The key of ``task`` (loaded, lr as asked: ``"auto"`` before the choice) on ``lm`` under ``settings``."""
    return make_key(
        model=lm.weights_hash or f"{lm.spec.id}@{lm.revision}", task=task.name, task_hash=task.config_hash,
        dtype=str(lm.dtype).removeprefix("torch."), shots=task.settings.shots, seed=task.settings.seed,
        lr=task.settings.lr, position=task.settings.position, draws=settings.seeds, shuffled=settings.shuffled,
        controls=controls_field(settings.controls, settings.seeds),
    )  # fmt: skip


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


@dataclass(frozen=True)
class StoredVerdict:
    """A property's verdict as the store keeps it (``Verdict.as_dict``), with the computed verdict's message."""

    name: str
    entry: dict[str, Any]

    @property
    def outcome(self) -> str:
        return str(self.entry["outcome"])

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"

    @property
    def estimate(self) -> float:
        return _number(self.entry.get("estimate"))

    @property
    def interval(self) -> tuple[float, float]:
        return _number(self.entry.get("low")), _number(self.entry.get("high"))

    @property
    def margin(self) -> float:
        return _number(self.entry.get("margin"))

    @property
    def draws(self) -> int:
        return int(self.entry.get("draws") or 1)

    @property
    def message(self) -> str:
        """The words of :attr:`pytest_icl.analysis.verdicts.Verdict.message`, from the stored numbers."""
        from pytest_icl.analysis.verdicts import message_of

        return message_of(catalogue.prop(self.name), self.entry) + " [stored]"


@dataclass(frozen=True)
class StoredGate:
    open: bool
    reason: str


@dataclass(frozen=True)
class StoredControl:
    name: str
    outcome: str
    message: str

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"


@dataclass
class _StoredAnalysis:
    gates: dict[str, StoredGate] = field(default_factory=dict)


@dataclass
class StoredResult:
    """A stored pair in place of an ``IclResult`` for the generated items (see the module's notes)."""

    task: Any  # the IclTask, loaded for its hash
    row: dict[str, Any]
    key: PairKey
    stored: bool = True

    @property
    def analysis(self) -> _StoredAnalysis:
        gates = self.row.get("gates") or {}
        return _StoredAnalysis({k: StoredGate(bool(g.get("open")), str(g.get("reason") or "")) for k, g in gates.items()})

    def check(self, name: str) -> StoredVerdict:
        return StoredVerdict(name, self.row["verdicts"][name])

    def has_control(self, name: str) -> bool:
        return "verdict" in ((self.row.get("controls") or {}).get(name) or {})

    def check_control(self, name: str) -> StoredControl:
        verdict = self.row["controls"][name]["verdict"]
        return StoredControl(name, verdict["outcome"], f"{verdict['message']} (stored result of this pair)")
