"""pytest-icl next to the real lm-eval on the shipped tasks: same prompts, log-probabilities and accuracy.

    python benchmarks/lm_eval_parity.py [--model smollm2-135m] [--tasks sentiment_blue_red topic_nonce] [--limit 64]

For each task lm-eval runs as a user runs it, ``lm_eval.simple_evaluate`` with ``--model hf`` on
the model's folder (for the embedded SmolLM2, its dequantised safetensors cache), the shipped
YAML unchanged (``--include_path tasks``: its ``num_fewshot``, its ``first_n`` sampler over the
pool shuffled by ``shuffle_seed_<s>``) and ``--limit``. pytest-icl loads the same task
(``load_task``, ``limit``) and runs its ICL stage (``run_settings``, attention capture on, as in a
run). The table gives, per task: the documents whose every choice request has pytest-icl's prompt
as its context, the largest per-choice |Δ log-probability| against lm-eval's ``resps``, both
accuracies (they must be equal), and the seconds of pytest-icl's ICL stage and of the whole
``simple_evaluate`` call (which also loads the model and builds the task, so it is not a speed
ratio). ``tests/unit/test_lm_eval_parity.py`` asserts the same on a tiny random model.

Measured (SmolLM2-135M-Instruct, fp32, all 64 test documents, shared 2-core CPU; the accuracies are the
ICL numbers in the YAML headers)::

    # smollm2-135m, float32, --limit None; simple_evaluate 647.5 s in all
    task                   k  docs  same context  max|Δlogp|  acc icl  acc lm-eval   icl s
    antonym_choice        16    64        64/64     3.05e-05    0.766        0.766    2.71
    sentiment_blue_red    16    64        64/64     1.59e-05    0.875        0.875   32.98
    syllable_first        16    64        64/64     2.05e-05    0.969        0.969   38.62
    topic_nonce           16    64        64/64     2.72e-05    0.812        0.812   59.98
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

TASKS = Path(__file__).resolve().parents[1] / "tasks"
MADE_UP = ("antonym_choice", "sentiment_blue_red", "syllable_first", "topic_nonce")


def lm_eval_run(folder: Path, names: list[str], *, limit: int | None, batch_size: int, device: str) -> tuple[dict, float]:
    """``lm_eval run --model hf --model_args pretrained=FOLDER --include_path tasks --tasks ... --limit N``."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    start = time.perf_counter()
    out = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={folder},dtype=float32", device=device, batch_size=batch_size,
        tasks=names, task_manager=TaskManager(include_path=str(TASKS), include_defaults=False), limit=limit, log_samples=True,
    )  # fmt: skip
    return out, time.perf_counter() - start


def side_by_side(lm, name: str, out: dict, *, limit: int | None, batch_size: int) -> dict:
    import torch

    from pytest_icl.engine.capture import AttentionCapture
    from pytest_icl.engine.encoding import encode_task, max_positions
    from pytest_icl.engine.runs import score_setting
    from pytest_icl.tasks.loading import TaskSource, load_task

    task = load_task(TaskSource.from_path(TASKS / name / f"{name}.yaml"), limit=limit)
    gold = torch.tensor([e.gold for e in task.eval_examples])
    start = time.perf_counter()
    encoded = encode_task(task, lm.tokenizer, max_length=max_positions(lm.model.config))
    capture = AttentionCapture(lm.model)
    try:
        ours = score_setting(lm.model, capture, encoded.icl, gold, context_spans=encoded.demo_spans, batch_size=batch_size)
    finally:
        capture.remove()
    seconds = time.perf_counter() - start

    samples = sorted(out["samples"][name], key=lambda s: s["doc_id"])
    same_context, delta = 0, 0.0
    for i, (sample, example) in enumerate(zip(samples, task.eval_examples)):
        same_context += {argument[0] for argument in sample["arguments"]} == {task.prompt(example)}
        theirs = torch.tensor([resp[0][0] for resp in sample["resps"]], dtype=torch.float64)
        delta = max(delta, float((ours.logprobs[i, : len(theirs)].double() - theirs).abs().max()))
    return {
        "task": name,
        "k": task.settings.shots,
        "n": len(task.eval_examples),
        "lm_eval_n": len(samples),
        "same_context": same_context,
        "max_abs_delta": delta,
        "acc_ours": int(ours.correct.sum()) / len(task.eval_examples),
        "acc_lm_eval": out["results"][name]["acc,none"],
        "ours_s": seconds,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tasks", nargs="+", default=list(MADE_UP))
    parser.add_argument("--limit", type=int, default=None, help="lm-eval's --limit: the first N documents (default: all)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, help="torch CPU threads (1 steadies the timings on a shared machine)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # the made-up tasks' data is shipped; nothing to fetch
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    from pytest_icl.models.loading import load_model

    with load_model(args.model) as lm:
        out, lm_eval_seconds = lm_eval_run(lm.path, args.tasks, limit=args.limit, batch_size=args.batch_size, device=str(lm.device))
        print(
            f"# {args.model} ({lm.path}), {str(lm.dtype).removeprefix('torch.')}, --limit {args.limit}; simple_evaluate {lm_eval_seconds:.1f} s in all"
        )
        print(f"{'task':<20} {'k':>3} {'docs':>5} {'same context':>13} {'max|Δlogp|':>11} {'acc icl':>8} {'acc lm-eval':>12} {'icl s':>7}")
        equal = True
        for name in args.tasks:
            row = side_by_side(lm, name, out, limit=args.limit, batch_size=args.batch_size)
            equal &= row["acc_ours"] == row["acc_lm_eval"] and row["same_context"] == row["n"] == row["lm_eval_n"]
            print(
                f"{row['task']:<20} {row['k']:>3} {row['n']:>5} {row['same_context']:>9}/{row['lm_eval_n']:<3} {row['max_abs_delta']:>11.2e} "
                f"{row['acc_ours']:>8.3f} {row['acc_lm_eval']:>12.3f} {row['ours_s']:>7.2f}"
            )
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
