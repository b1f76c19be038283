"""``shuffled``: FT on the demonstrations with permuted labels; ZSL and ICL are the real run's (definitions §12.4.2).

Real FT must be more similar to ICL than FT that learned the wrong mapping (the checks are the
catalogue row's); otherwise the similarity is about the demonstration texts, not the
input-label mapping ICL uses. The default run already trains this FT beside every draw
(``--icl-shuffled``); the item then reads those numbers instead of training it again.
Kendall(ICL, FT) is undefined where a shuffled label tokenises to another length
(``Records.ft_aligned``): FT's training token t is then not ICL's demonstration token t.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import TYPE_CHECKING

from pytest_icl.analysis.draws import SHUFFLED, SHUFFLED_METRICS
from pytest_icl.controls.base import Control, PairRun, derived_hash

if TYPE_CHECKING:
    from pytest_icl.analysis.aggregate import Analysis
    from pytest_icl.tasks.loading import IclTask


def shuffled_label_task(task: IclTask, seed: int) -> IclTask:
    """``task`` with the demonstrations' labels permuted so that every label changes where it can.

    How: the demonstrations are shuffled (seeded), stably sorted by gold index, and each takes the
    gold index of the one m places further on (cyclically), m being the size of the largest
    label class. Sorted blocks of equal labels are at most m long, so when no label holds more
    than half the demonstrations every label changes and the label counts are kept (a
    permutation, not random labels). A demonstration whose label is still unchanged (one class
    over half) or whose own choices lack the borrowed index (per-example choice lists) gets a
    different choice of its own, uniformly; only one whose choices are all the same text keeps
    its label. Texts, choices, eval examples and the order are unchanged.
    """
    demos = task.demonstrations
    rng = random.Random(seed)
    order = list(range(len(demos)))
    rng.shuffle(order)
    order.sort(key=lambda i: demos[i].gold)
    m = max((sum(d.gold == g for d in demos) for g in {d.gold for d in demos}), default=0)
    new_gold = {i: demos[order[(pos + m) % len(order)]].gold for pos, i in enumerate(order)}
    shuffled = []
    for i, demo in enumerate(demos):
        gold = new_gold[i]
        if gold >= len(demo.choices) or demo.choices[gold] == demo.answer:
            others = [c for c, text in enumerate(demo.choices) if text != demo.answer]
            gold = rng.choice(others) if others else demo.gold
        shuffled.append(replace(demo, gold=gold))
    return replace(task, demonstrations=tuple(shuffled), config_hash=derived_hash(task, f"shuffled-labels:{seed}"))


class Shuffled(Control):
    def variant_runs(self, model, tokenizer, task, base, *, seed, common):
        from pytest_icl.engine import runs

        shuffled = shuffled_label_task(task, seed)
        return {"shuffled": lambda: runs.run_settings(model, tokenizer, task, ft_task=shuffled, reuse=base, **common)}

    def ready(self, pair: PairRun) -> dict[str, Analysis]:
        """The default run trained FT on each draw's shuffled labels already (seed = the draw's): its numbers are the variant's."""
        evidence = pair.analysis.evidence
        if not all(m + SHUFFLED in evidence for m in SHUFFLED_METRICS):
            return {}
        from pytest_icl.analysis.aggregate import Analysis

        values = pair.analysis.values
        view = Analysis(values={m: values[m + SHUFFLED] for m in SHUFFLED_METRICS},
                        intervals={m: pair.analysis.intervals[m + SHUFFLED] for m in SHUFFLED_METRICS},
                        layers={m: pair.analysis.layers.get(m + SHUFFLED, []) for m in SHUFFLED_METRICS},
                        counts=dict(pair.analysis.counts), evidence={m: evidence[m + SHUFFLED] for m in SHUFFLED_METRICS})  # fmt: skip
        return {"shuffled": view}


CONTROL = Shuffled("shuffled")
