"""Choose a task's FT learning rate on its validation split.

    python -m pytest_icl tune tasks/antonym_choice/antonym_choice.yaml --lr 1e-3 3e-3 1e-2 3e-2

Dai et al. chose seeds and learning rates on the split they then reported (definitions §6, definitions §12.4.7);
pytest-icl's tasks choose them on a validation split the metrics never see. For each candidate
lr this runs the same FT the tests run (K/V-only SGD, one step per demonstration, then
zero-shot) and scores the validation examples; ZSL and ICL are scored once. The pick is the lr
with the highest FT accuracy, ties going to the smallest lr (the smallest change to the model
that does as well). Two kinds of lr are passed over while another is left: one whose FT
changed no ZSL prediction (FT did nothing to compare with ICL) and one whose FT model gives one
answer to every example (its accuracy is that class's share, not something FT learned). The
printed block is meant for the task YAML's header comment.

``lr: auto`` (task YAML) / ``--icl-lr auto`` applies the same rule per model at run time:
:func:`choose_lr` sweeps :data:`DEFAULT_LRS` on the validation split, caches the choice as JSON
under the pytest-icl cache (``lr/<key>.json``, keyed by the weights hash, the task's hash and
shots/seed/position/dtype), and falls back to the task's fixed lr, saying so, when the task has
no validation split.

Example::

    sweep = sweep_lr(model, tokenizer, task, [1e-3, 1e-2])
    sweep.best.lr
    choice = choose_lr(lm.model, lm.tokenizer, source, weights_hash=lm.weights_hash)
    task = load_task(source, lr="auto").with_lr(choice.lr)
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_icl.errors import NoValidationSplit
from pytest_icl.models.loading import default_cache_root
from pytest_icl.tasks.loading import AUTO_LR, TaskSettings, TaskSource, task_settings

if TYPE_CHECKING:
    from collections.abc import Sequence

    from torch import nn

    from pytest_icl.tasks.loading import IclTask

# Half-decade steps (x ~3) from 1e-4 to 1e-1. The paper's Table 9 picks span 1.6e-4 (SST-5) to
# 2e-1 (AGNews) for GPT 1.3B/2.7B; on SmolLM2 the shipped tasks measured best at 3e-3 to 3e-2, and
# 3e-2+ already collapses some tasks to one answer. A finer grid would cost one FT + one scoring
# pass per value for differences the 24-example validation splits cannot resolve.
DEFAULT_LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
FALLBACK_LR = TaskSettings().lr  # for lr: auto on a task with no validation split
_RULE_VERSION = 1  # bump when the choice rule changes: cached choices then no longer match


@dataclass(frozen=True)
class LrTrial:
    lr: float
    acc_ft: float
    changed: int  # eval examples whose prediction FT changed from ZSL's
    majority: float  # share of the most frequent FT prediction (1.0: one answer for everything)

    @property
    def degenerate(self) -> bool:
        """FT changed no ZSL prediction, or gives one answer to every example: nothing to compare with ICL."""
        return self.changed == 0 or self.majority == 1.0


@dataclass(frozen=True)
class LrSweep:
    task: str
    n: int
    acc_zsl: float
    acc_icl: float
    trials: tuple[LrTrial, ...]

    @property
    def best(self) -> LrTrial:
        useful = [t for t in self.trials if not t.degenerate]
        return max(useful or self.trials, key=lambda t: (t.acc_ft, -t.lr))

    def lines(self) -> list[str]:
        rows = [f"ZSL {self.acc_zsl:.3f}  ICL {self.acc_icl:.3f}  ({self.n} examples)"]
        rows += [
            f"lr {t.lr:.0e}: FT {t.acc_ft:.3f}  changed {t.changed}/{self.n} ZSL predictions  majority share {t.majority:.2f}"
            + ("  (one answer for everything)" if t.majority == 1.0 else "  (FT did nothing)" if t.changed == 0 else "")
            for t in self.trials
        ]
        rows.append(f"best: lr {self.best.lr:.0e} (highest FT accuracy of the lrs that change something; ties: smallest)")
        return rows


def sweep_lr(model: nn.Module, tokenizer, task: IclTask, lrs: Sequence[float], *, batch_size: int = 16) -> LrSweep:
    """ZSL and ICL accuracy on ``task``'s eval examples, and FT accuracy for every lr in ``lrs``."""
    import torch

    from pytest_icl.analysis import metrics
    from pytest_icl.engine.capture import AttentionCapture
    from pytest_icl.engine.encoding import encode_task, max_positions
    from pytest_icl.engine.finetune import finetuned
    from pytest_icl.engine.runs import score_setting

    if not lrs:
        raise ValueError("sweep_lr needs at least one learning rate")
    encoded = encode_task(task, tokenizer, max_length=max_positions(model.config))
    gold = torch.tensor([e.gold for e in task.eval_examples])
    capture = AttentionCapture(model)
    try:

        def score(prefix):
            return score_setting(model, capture, encoded, gold, prefix=prefix, position=task.settings.position, batch_size=batch_size)

        zsl, icl = score(encoded.zsl_prefix), score(encoded.icl_prefix)
        trials = []
        for lr in lrs:
            with finetuned(model, capture, encoded.demo_sequences, lr=lr, demo_offset=encoded.demo_offset):
                ft = score(encoded.zsl_prefix)
            trials.append(
                LrTrial(
                    lr=float(lr),
                    acc_ft=metrics.accuracy(ft.correct),
                    changed=int((ft.predictions != zsl.predictions).sum()),
                    majority=metrics.majority_fraction(ft.predictions),
                )
            )
    finally:
        capture.remove()
    return LrSweep(task.name, len(gold), metrics.accuracy(zsl.correct), metrics.accuracy(icl.correct), tuple(trials))


@dataclass(frozen=True)
class LrChoice:
    """The FT lr for one model × task under ``lr: auto``, where it came from, and why."""

    lr: float
    source: str  # "validation" (swept now) | "cache" (swept by an earlier run) | "fixed" (no validation split)
    reason: str
    trials: tuple[LrTrial, ...] = ()

    @property
    def fell_back(self) -> bool:
        """``lr: auto`` could not choose (no validation split): FT uses a fixed lr, and :attr:`reason` says why."""
        return self.source == "fixed"


def _choice_reason(sweep: LrSweep) -> str:
    best = sweep.best
    rule = "the most accurate FT among the lrs that change a ZSL prediction without answering one class (ties: smallest)"
    if all(t.degenerate for t in sweep.trials):
        rule = "the most accurate FT; every candidate changed no ZSL prediction or answered one class"
    return (
        f"lr {best.lr:g} chosen on {sweep.n} validation examples: {rule}; FT {best.acc_ft:.3f}, "
        f"ZSL {sweep.acc_zsl:.3f}, ICL {sweep.acc_icl:.3f}; candidates {', '.join(f'{t.lr:g}' for t in sweep.trials)}"
    )


def _read_choice(path: Path) -> LrChoice | None:
    try:
        stored = json.loads(path.read_text())
        trials = tuple(LrTrial(**t) for t in stored["trials"])
        return LrChoice(float(stored["lr"]), "cache", f"{stored['reason']} (cached in {path})", trials)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent or damaged: choose again


def _write_choice(path: Path, choice: LrChoice, key: dict[str, Any]) -> None:
    record = {"lr": choice.lr, "reason": choice.reason, "trials": [asdict(t) for t in choice.trials], "key": key}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        partial.write_text(json.dumps(record, indent=1))
        os.replace(partial, path)  # a reader never sees half a file
    except OSError:
        pass  # an unwritable cache costs the next run the sweep again, nothing else


def choose_lr(
    model: nn.Module,
    tokenizer,
    source: TaskSource,
    *,
    weights_hash: str,
    shots: int | None = None,
    seed: int | None = None,
    position: str | None = None,
    data: str | None = None,
    candidates: Sequence[float] = DEFAULT_LRS,
    batch_size: int = 16,
    cache_root: Path | None = None,
) -> LrChoice:
    """The FT lr for ``lr: auto``: :class:`LrSweep`'s rule on the task's validation split, cached.

    The cache key is the weights hash, the hash of the task as loaded on its validation split
    (config, demonstrations and validation examples, so edited data never reuses a stale choice),
    shots/seed/position, the model's dtype, the candidates and the rule's version. A task without
    a validation split (or run on ``--icl-data`` files) keeps its fixed lr, or
    :data:`FALLBACK_LR` when that is 'auto', and the reason says so.
    """
    from pytest_icl.tasks.loading import load_task

    if not candidates:
        raise ValueError("choose_lr needs at least one candidate learning rate")
    settings = task_settings(source, shots=shots, seed=seed, position=position)
    try:
        task = load_task(source, shots=shots, seed=seed, position=position, data=data, split="validation")
    except NoValidationSplit:
        fixed = FALLBACK_LR if settings.lr == AUTO_LR else settings.lr
        why = (
            "--icl-data gives it only train and eval files; a validation file (DIR/validation.*, or TRAIN,VALIDATION,TEST) lets it choose"
            if data
            else "its YAML declares no validation_split"
        )
        uses = f"the default lr {fixed:g} (its lr is 'auto')" if settings.lr == AUTO_LR else f"its fixed lr {fixed:g}"
        return LrChoice(fixed, "fixed", f"{source.name}: no validation split to choose the FT lr on ({why}); FT uses {uses}.")
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    key = {
        "weights": weights_hash, "task": task.config_hash, "shots": task.settings.shots, "seed": task.settings.seed,
        "position": task.settings.position, "dtype": dtype, "candidates": [float(c) for c in candidates], "rule": _RULE_VERSION,
    }  # fmt: skip
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    path = (cache_root or default_cache_root()) / "lr" / f"{digest}.json"
    cached = _read_choice(path)
    if cached is not None:
        return cached
    sweep = sweep_lr(model, tokenizer, task, candidates, batch_size=batch_size)
    choice = LrChoice(sweep.best.lr, "validation", f"{task.name}: {_choice_reason(sweep)}", sweep.trials)
    _write_choice(path, choice, key)
    return choice


if __name__ == "__main__":
    # The command's first spelling, kept for scripts. The command lives with the others, above the
    # engine, because it loads tasks as the pipeline does; run as a script, this import is no cycle.
    from pytest_icl.__main__ import main

    sys.exit(main(["tune", *sys.argv[1:]]))
