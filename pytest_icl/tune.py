"""Choose a task's FT learning rate on its validation split.

    python -m pytest_icl.tune tasks/antonym_choice/antonym_choice.yaml --lr 1e-3 3e-3 1e-2 3e-2

Dai et al. chose seeds and learning rates on the split they then reported (spec §6, §12.4.7);
pytest-icl's tasks choose them on a validation split the metrics never see. For each candidate
lr this runs the same FT the tests run (K/V-only SGD, one step per demonstration, then
zero-shot) and scores the validation examples; ZSL and ICL are scored once. The pick is the lr
with the highest FT accuracy, ties going to the smallest lr (the smallest change to the model
that does as well). Two kinds of lr are passed over while another is left: one whose FT
changed no ZSL prediction (FT did nothing to compare with ICL) and one whose FT model gives one
answer to every example (its accuracy is that class's share, not something FT learned). The
printed block is meant for the task YAML's header comment.

Example::

    sweep = sweep_lr(model, tokenizer, task, [1e-3, 1e-2])
    sweep.best.lr
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_icl.models import DEFAULT_MODEL, ModelError
from pytest_icl.tasks import TaskError, TaskSource

if TYPE_CHECKING:
    from collections.abc import Sequence

    from torch import nn

    from pytest_icl.tasks import IclTask

DEFAULT_LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)


@dataclass(frozen=True)
class LrTrial:
    lr: float
    acc_ft: float
    changed: int  # eval examples whose prediction FT changed from ZSL's
    majority: float  # share of the most frequent FT prediction (1.0: one answer for everything)


@dataclass(frozen=True)
class LrSweep:
    task: str
    n: int
    acc_zsl: float
    acc_icl: float
    trials: tuple[LrTrial, ...]

    @property
    def best(self) -> LrTrial:
        useful = [t for t in self.trials if t.changed > 0 and t.majority < 1.0]
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

    from pytest_icl import metrics
    from pytest_icl.capture import AttentionCapture
    from pytest_icl.encoding import encode_task, max_positions
    from pytest_icl.finetune import finetuned
    from pytest_icl.runs import score_setting

    if not lrs:
        raise ValueError("sweep_lr needs at least one learning rate")
    encoded = encode_task(task, tokenizer, max_length=max_positions(model.config))
    gold = torch.tensor([e.gold for e in task.eval_examples])
    capture = AttentionCapture(model)
    try:
        def score(prefix):
            return score_setting(
                model, capture, encoded, gold, prefix=prefix, position=task.settings.position, batch_size=batch_size
            )

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


def _source(text: str) -> TaskSource:
    path = Path(text)
    return TaskSource.from_path(path) if path.suffix in (".yaml", ".yml") else TaskSource.builtin(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_icl.tune", description=__doc__.split("\n\n")[0])
    parser.add_argument("tasks", nargs="+", help="task YAML files (or lm-eval task names)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"alias, hub id, folder or .gguf (default {DEFAULT_MODEL})")
    parser.add_argument("--lr", type=float, nargs="+", default=list(DEFAULT_LRS), help="candidate learning rates")
    parser.add_argument("--shots", type=int, help="override the task's icl.shots")
    parser.add_argument("--seed", type=int, help="override the task's icl.seed")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)

    from pytest_icl.models import load_model
    from pytest_icl.tasks import load_task

    try:
        tasks = [load_task(_source(t), shots=args.shots, seed=args.seed, split="validation") for t in args.tasks]
        lm = load_model(args.model, device=args.device, dtype=args.dtype)
    except (TaskError, ModelError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    with lm:
        for task in tasks:
            sweep = sweep_lr(lm.model, lm.tokenizer, task, args.lr, batch_size=args.batch_size)
            s = task.settings
            print(f"# {task.name} on validation, {lm.spec.id} {str(lm.dtype).removeprefix('torch.')}, k={s.shots} seed={s.seed}")
            for line in sweep.lines():
                print(f"#   {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
