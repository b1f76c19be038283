"""The opt-in controls of one task × model pair (``--icl-controls``), run after its analysis.

Each control is a row of :data:`pytest_icl.catalogue.CONTROLS` and a module of this package
(:mod:`pytest_icl.controls.base` says what they share); this module runs the ones asked for,
keeps each one's item verdict, and packs their numbers into the pair's row
(``row["controls"]``), where the table, the files and the HTML report read them.

Example::

    controls = run_pair_controls(("shuffled", "seeds"), model, tokenizer, tasks, draws, analysis, margins=..., verdicts=...)
    controls.check("shuffled").passed
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_icl.controls.base import ControlVerdict, PairRun, get

if TYPE_CHECKING:
    from pytest_icl.analysis.aggregate import Analysis
    from pytest_icl.engine.runs import Records
    from pytest_icl.tasks.loading import IclTask

__all__ = ["ControlVerdict", "PairControls", "run_pair_controls"]


@dataclass
class PairControls:
    verdicts: dict[str, ControlVerdict] = field(default_factory=dict)
    row: dict[str, Any] = field(default_factory=dict)  # JSON-simple: goes into the pair's row

    def check(self, name: str) -> ControlVerdict:
        if name not in self.verdicts:
            raise KeyError(f"control {name!r} did not run for this pair; add it to --icl-controls")
        return self.verdicts[name]


def run_pair_controls(
    names: tuple[str, ...],
    model,
    tokenizer,
    tasks: list[IclTask],
    draws: list[Records],
    analysis: Analysis,
    *,
    margins: dict[str, float],
    verdicts: dict[str, Any] | None = None,
    batch_size: int = 16,
) -> PairControls:
    """Run the controls in ``names`` beside the pair's draws (``tasks[s]`` made ``draws[s]``; ``analysis`` is over them all)."""
    pair = PairRun(model, tokenizer, tuple(tasks), tuple(draws), analysis, margins=margins, verdicts=dict(verdicts or {}),
                   batch_size=batch_size)  # fmt: skip
    result = PairControls()
    for name in names:
        start = time.perf_counter()
        verdict, entry = get(name).run(pair)
        entry["seconds"] = round(time.perf_counter() - start, 3)
        result.row[name] = entry
        if verdict is not None:  # a control without a verdict (lcgd) is only reported
            result.verdicts[name] = verdict
    return result
