"""pytest-icl next to lm-eval on the same prompts: token ids, log-probabilities, accuracy, speed.

    python benchmarks/lm_eval_parity.py [--model smollm2-135m] [--tasks sentiment_blue_red topic_nonce]

For each task (k=16 demonstrations, the first 64 eval documents) the ICL requests are built as
lm-eval's ``construct_requests`` builds a ``multiple_choice`` request — ``(few-shot context,
target_delimiter + choice)`` per choice — and scored twice on the same model object:

* by ``lm_eval.models.huggingface.HFLM.loglikelihood`` (batch size 16, as pytest-icl's default);
* by pytest-icl's ICL stage (``runs.score_setting`` with the attention capture on, as in a run).

It prints how many documents get identical token ids (every choice's context and continuation
ids equal ``HFLM._encode_pair``), the largest per-choice |Δ log-probability|, both accuracies,
and the ICL-stage speed ratio (lm-eval's seconds over pytest-icl's). Measured before the
lm-eval tokenisation (issue 8): ids identical 0/64, max |Δ| 0.41 and 1.45 nats, speed ratio 14.6x
and 13.5x. Figures on a shared 2-core CPU may be inflated by other processes.

Measured after it (SmolLM2-135M fp32, --threads 1, shared 2-core CPU)::

    task                  ids equal  max|Δlogp|  acc icl  acc lm-eval   icl s  lm-eval s  ratio
    sentiment_blue_red       64/64    9.18e-06    0.875        0.875    6.46      80.86  12.5x
    topic_nonce              64/64    1.38e-05    0.812        0.812   18.82     338.31  18.0x

In the same process the code before the change gave 12.7x and 12.9x (its ICL stage 6.36 s and
26.20 s): the ratio holds on the single-token task and grows with the two-level scoring.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

TASKS = Path(__file__).resolve().parents[1] / "tasks"


def _requests(task):
    from lm_eval.api.instance import Instance

    return [
        [
            Instance(request_type="loglikelihood", doc={}, arguments=(task.prompt(example), task.target_delimiter + choice), idx=j)
            for j, choice in enumerate(example.choices)
        ]
        for example in task.eval_examples
    ]


def _our_request_ids(encoded, i: int):
    """(context ids, continuation ids) per choice of example ``i``."""
    return [(list(encoded.icl.contexts[i]), list(c)) for c in encoded.icl.continuations[i]]


def side_by_side(model, tokenizer, name: str, *, shots: int = 16, limit: int = 64, batch_size: int = 16) -> dict:
    import torch
    from lm_eval.models.huggingface import HFLM

    from pytest_icl.engine.capture import AttentionCapture
    from pytest_icl.engine.encoding import encode_task, max_positions
    from pytest_icl.engine.runs import score_setting
    from pytest_icl.tasks.loading import TaskSource, load_task

    task = load_task(TaskSource.from_path(TASKS / name / f"{name}.yaml"), shots=shots, limit=limit)
    gold = torch.tensor([e.gold for e in task.eval_examples])
    requests = _requests(task)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(model.device))
    with torch.no_grad():  # the first forward after loading pages the weights in: not part of either timing
        model(input_ids=torch.tensor([lm._encode_pair(*requests[0][0].args)[0][:8]], device=model.device))

    start = time.perf_counter()
    encoded = encode_task(task, tokenizer, max_length=max_positions(model.config))
    capture = AttentionCapture(model)
    try:
        ours = score_setting(
            model, capture, encoded, gold, prefix=encoded.icl_prefix, context_spans=encoded.demo_spans, batch_size=batch_size
        )
    finally:
        capture.remove()
    ours_seconds = time.perf_counter() - start

    start = time.perf_counter()
    scores = iter(lm.loglikelihood([r for rs in requests for r in rs], disable_tqdm=True))
    theirs_seconds = time.perf_counter() - start
    theirs = torch.full_like(ours.logprobs, float("-inf"))
    for i, rs in enumerate(requests):
        for j in range(len(rs)):
            theirs[i, j] = next(scores)[0]

    same_ids = sum(
        all(lm._encode_pair(*r.args) == ids for r, ids in zip(rs, _our_request_ids(encoded, i))) for i, rs in enumerate(requests)
    )
    finite = torch.isfinite(theirs)
    return {
        "task": name,
        "n": len(requests),
        "same_ids": same_ids,
        "max_abs_delta": float((ours.logprobs - theirs)[finite].abs().max()),
        "acc_ours": float(ours.correct.float().mean()),
        "acc_lm_eval": float((theirs.argmax(dim=1) == gold).float().mean()),
        "ours_s": ours_seconds,
        "lm_eval_s": theirs_seconds,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tasks", nargs="+", default=["sentiment_blue_red", "topic_nonce"])
    parser.add_argument("--threads", type=int, help="torch CPU threads (1 steadies the ratio on a shared machine)")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    from pytest_icl.models.loading import load_model

    with load_model(args.model) as lm:
        print(f"{'task':<20} {'ids equal':>10} {'max|Δlogp|':>11} {'acc icl':>8} {'acc lm-eval':>12} {'icl s':>7} {'lm-eval s':>10} {'ratio':>6}")
        for name in args.tasks:
            row = side_by_side(lm.model, lm.tokenizer, name)
            print(
                f"{row['task']:<20} {row['same_ids']:>6}/{row['n']:<3} {row['max_abs_delta']:>11.2e} {row['acc_ours']:>8.3f} "
                f"{row['acc_lm_eval']:>12.3f} {row['ours_s']:>7.2f} {row['lm_eval_s']:>10.2f} {row['lm_eval_s'] / row['ours_s']:>5.1f}x"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
