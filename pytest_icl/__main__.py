"""pytest-icl's commands: ``python -m pytest_icl COMMAND ...``.

    python -m pytest_icl tune tasks/antonym_choice/antonym_choice.yaml --lr 1e-3 3e-3 1e-2 3e-2
    python -m pytest_icl merge shard-0 shard-1 shard-2 shard-3 -o icl-report [--baseline FILE]
    python -m pytest_icl diff old-report new-report [--match task] [--json diff.json]
    python -m pytest_icl history report-v1 report-v2 report-v3 -o history [--labels v1 v2 v3]

Exit codes: 0 done (``diff``: no regression), 1 ``diff`` found a regression or a missing pair,
2 a command that cannot run (a bad argument, a folder that is no report, shards that mix setups).

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


def _tolerance(text: str) -> tuple[str, float]:
    from pytest_icl.report.baseline import parse_tolerance

    try:
        return parse_tolerance(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def merge(argv: Sequence[str]) -> int:
    """Merge store folders (shards) into one report; 2 with one paragraph when they mix setups."""
    parser = argparse.ArgumentParser(prog="python -m pytest_icl merge", description="Merge report folders (shards) into one report.")
    parser.add_argument("folders", nargs="+", type=Path, help="report folders written with --icl-report (one per shard)")
    parser.add_argument("-o", "--output", required=True, type=Path, help="the merged report folder (created, or added to)")
    parser.add_argument("--partial", action="store_true", help="merge even when shards are missing")
    parser.add_argument("--no-html", action="store_true", help="write results.json/csv and samples, not index.html and plots")
    parser.add_argument("--baseline", type=Path, help="also store the merged rows in this baseline file (as --icl-baseline-update)")
    args = parser.parse_args(argv)

    from pytest_icl.report.baseline import update_baseline
    from pytest_icl.report.merge import merge as merge_folders
    from pytest_icl.report.store import Store

    try:
        summary = merge_folders(args.folders, args.output, partial=args.partial, html=not args.no_html)
        lines = summary.lines()
        if args.baseline is not None:
            lines.append("baseline: " + update_baseline(args.baseline, Store.read(args.output).rows()).line)
    except IclError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


def diff(argv: Sequence[str]) -> int:
    """Per pair and metric, the change between two reports; 1 on a regression or a missing pair."""
    parser = argparse.ArgumentParser(
        prog="python -m pytest_icl diff", description="Compare two reports per pair and metric (exit 1 on a regression)."
    )
    parser.add_argument("old", type=Path, help="report folder, results.json or baseline file")
    parser.add_argument("new", type=Path, help="report folder, results.json or baseline file")
    parser.add_argument("--match", choices=("model", "task"), default="model", help="pair rows by model id too (default), or by task only")
    parser.add_argument("--metric", action="append", help="show only this metric (repeatable)")
    parser.add_argument("--tolerance", action="append", type=_tolerance, default=[], metavar="METRIC=VALUE", help="as --icl-tolerance")
    parser.add_argument("--json", type=Path, help="also write the comparison as JSON")
    args = parser.parse_args(argv)

    from pytest_icl.report.diff import diff as diff_reports
    from pytest_icl.report.rows import atomic_write_text

    try:
        result = diff_reports(args.old, args.new, match=args.match, metrics=args.metric, tolerances=dict(args.tolerance))
    except IclError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("\n".join(result.lines()))
    if args.json is not None:
        import json

        atomic_write_text(args.json, json.dumps(result.to_dict(), indent=1, default=str) + "\n")
    return result.exit_code


def history(argv: Sequence[str]) -> int:
    """A table and per-metric plots across model versions."""
    parser = argparse.ArgumentParser(
        prog="python -m pytest_icl history", description="Tables and per-metric plots of reports across model versions."
    )
    parser.add_argument("folders", nargs="+", type=Path, help="report folders (or results.json files), one per version")
    parser.add_argument("-o", "--output", required=True, type=Path, help="folder for history.csv and <metric>.png")
    parser.add_argument("--labels", nargs="+", help="one label per folder (default: each row's model id and revision)")
    parser.add_argument(
        "--order", choices=("label", "given"), default="label", help="natural sort of the labels (default) or the folders' order"
    )
    parser.add_argument("--metric", action="append", help="plot this metric (repeatable; default: the compared metrics)")
    args = parser.parse_args(argv)

    from pytest_icl.report.history import write_history

    try:
        result = write_history(args.folders, args.output, labels=args.labels, order=args.order, metrics=args.metric)
    except IclError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("\n".join(result.lines()))
    return 0


COMMANDS = {"tune": tune, "merge": merge, "diff": diff, "history": history}
ABOUT = {
    "tune": "choose a task's FT learning rate on its validation split",
    "merge": "merge report folders (shards) into one report",
    "diff": "compare two reports per pair and metric (exit 1 on a regression)",
    "history": "a table and per-metric plots across model versions",
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        return COMMANDS[argv[0]](argv[1:])
    usage = f"usage: python -m pytest_icl {{{','.join(COMMANDS)}}} ...\n" + "\n".join(
        f"  {name:<8} {about}" for name, about in ABOUT.items()
    )
    if argv and argv[0] in ("-h", "--help"):
        print(usage)
        return 0
    print(f"{usage}\nerror: {f'unknown command {argv[0]!r}' if argv else 'no command given'}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
