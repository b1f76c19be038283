"""pytest-icl's commands: ``python -m pytest_icl COMMAND ...``.

    python -m pytest_icl tune tasks/antonym_choice/antonym_choice.yaml --lr 1e-3 3e-3 1e-2 3e-2

``tune`` sweeps FT learning rates on a task's validation split and prints a comment block for
the task YAML (the rule: :mod:`pytest_icl.engine.tune`). Its flags take the same values as the
pytest options of the same names (``--shots`` as ``--icl-shots``, ``--dtype`` as
``--icl-dtype``...): they are parsed by :func:`pytest_icl.options.parse_options` into the
pipeline's settings, and the tasks load as the pipeline loads them. ``python -m
pytest_icl.engine.tune`` is the same command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pytest_icl.errors import IclError

# tune's flag -> the pytest option whose parser (and so whose grammar) it uses
_TUNE_OPTIONS = {
    "model": "icl_model", "shots": "icl_shots", "seed": "icl_seed", "dtype": "icl_dtype", "device": "icl_device",
    "batch_size": "icl_batch_size",
}  # fmt: skip


def tune(argv: Sequence[str]) -> int:
    """Print the lr sweep of each task on its validation split; 2 with one line when a task or model cannot be used."""
    from pytest_icl.engine.tune import DEFAULT_LRS
    from pytest_icl.models.loading import DEFAULT_MODEL

    parser = argparse.ArgumentParser(
        prog="python -m pytest_icl tune", description="Choose a task's FT learning rate on its validation split."
    )
    parser.add_argument("tasks", nargs="+", help="task YAML files, or task names (./tasks first, then lm-eval built-ins)")
    parser.add_argument("--model", help=f"alias, hub id, folder or .gguf (default {DEFAULT_MODEL})")
    # Candidates, not an FT lr: 0 is allowed (it checks that FT without a step changes nothing).
    parser.add_argument("--lr", type=float, nargs="+", default=list(DEFAULT_LRS), help="candidate learning rates")
    parser.add_argument("--shots", help="override the task's icl.shots")
    parser.add_argument("--seed", help="override the task's icl.seed")
    parser.add_argument("--dtype", help="float32 (default), bfloat16, float16 or auto")
    parser.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--batch-size", help="eval examples per forward pass (default 16)")
    args = parser.parse_args(argv)

    from pytest_icl.engine.tune import sweep_lr
    from pytest_icl.models.loading import load_model
    from pytest_icl.options import parse_options
    from pytest_icl.pipeline import PipelineSettings, load, task_source

    given = {dest: getattr(args, flag) for flag, dest in _TUNE_OPTIONS.items() if getattr(args, flag) is not None}
    flag_of = {dest: f"--{flag.replace('_', '-')}" for flag, dest in _TUNE_OPTIONS.items()}
    if "icl_model" in given:
        given["icl_model"] = [given["icl_model"]]
    roots = [Path("tasks")] if Path("tasks").is_dir() else []
    try:
        options = parse_options(lambda dest: (given[dest], flag_of[dest]) if dest in given else None)
        settings = PipelineSettings.from_options(options)
        tasks = [load(task_source(name, roots=roots), settings, split="validation") for name in args.tasks]
        lm = load_model(options.models[0], device=options.device, dtype=options.dtype)
    except IclError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    with lm:
        for task in tasks:
            sweep = sweep_lr(lm.model, lm.tokenizer, task, args.lr, batch_size=settings.batch_size)
            s = task.settings
            print(f"# {task.name} on validation, {lm.spec.id} {str(lm.dtype).removeprefix('torch.')}, k={s.shots} seed={s.seed}")
            for line in sweep.lines():
                print(f"#   {line}")
    return 0


COMMANDS = {"tune": tune}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        return COMMANDS[argv[0]](argv[1:])
    usage = f"usage: python -m pytest_icl {{{','.join(COMMANDS)}}} ...\n  tune  choose a task's FT learning rate on its validation split"
    if argv and argv[0] in ("-h", "--help"):
        print(usage)
        return 0
    print(f"{usage}\nerror: {f'unknown command {argv[0]!r}' if argv else 'no command given'}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
