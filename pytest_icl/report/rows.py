"""Result rows, the terminal table, and ``results.json`` / ``results.csv``.

A row is one task × model analysis, JSON-simple so it can travel from pytest-xdist workers
through ``report.user_properties``. Schema (``SCHEMA_VERSION``)::

    task, task_hash                  task name and hash of its config + demonstrations + eval examples
    model, model_id, revision,       what the user asked for, its display id, the resolved revision
    weights_hash, dtype, device      and a sha256 of the weights; compute dtype and device
    shots, seed, lr, position, eval  k, demonstration seed, FT learning rate, analysed position, #eval
    values      {metric: float}      every metric and control (see pytest_icl.analysis.aggregate)
    intervals   {metric: [lo, hi]}   95 % bootstrap intervals over eval examples
    layers      {metric: [float]}    per-layer curves
    counts      {name: int}          eval, shots, training tokens, ZSL errors, FT/ICL fixes, …
    timings     {stage: seconds}
    properties  {property: outcome}  passed, failed, skipped, xfailed, xpassed, inconclusive, error
    versions    {package: version}

``results.csv`` holds the scalar columns plus ``values`` flattened (one column per metric);
intervals and layers stay in the JSON. Both are rewritten atomically once per finished pair
(:mod:`pytest_icl.report.results`), so an interrupted run keeps every finished pair and never leaves a
half-written file. ``samples_<model>_<task>.jsonl`` holds one line per eval example (prompt,
choices, log-probs and prediction per setting), like lm-eval's ``--log_samples``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from pytest_icl import catalogue

SCHEMA_VERSION = 1
SCALAR_COLUMNS = (
    "task", "task_hash", "model", "model_id", "revision", "weights_hash", "dtype", "device",
    "shots", "seed", "lr", "position", "eval",
)  # fmt: skip


def row_key(row: dict[str, Any]) -> tuple:
    """What makes two rows the same experiment."""
    return (
        row["task"],
        row["task_hash"],
        row["model_id"],
        row["weights_hash"],
        row["shots"],
        row["seed"],
        row["lr"],
        row["position"],
        row["dtype"],
    )


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file in the same folder, then rename: readers see old or new, never half."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """:func:`atomic_write_text` for bytes (PNG plots)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _mode_for(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(temporary, mode)  # mkstemp makes the file private; a report is an ordinary file
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _mode_for(path: Path) -> int:
    """The permissions a plain ``open(path, "w")`` would leave: the old file's, else 0o666 less the umask."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; null means "undefined" (e.g. Rec2FTP with an empty denominator)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def results_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps({"schema": SCHEMA_VERSION, "rows": _json_safe(rows)}, indent=1, sort_keys=False) + "\n"


def results_csv(rows: list[dict[str, Any]]) -> str:
    metric_names = sorted({name for row in rows for name in row["values"]})
    property_names = sorted({name for row in rows for name in row.get("properties", {})})
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*SCALAR_COLUMNS, *metric_names, *(f"property_{p}" for p in property_names)])
    for row in rows:
        values = [row["values"].get(m) for m in metric_names]
        writer.writerow(
            [row.get(c) for c in SCALAR_COLUMNS]
            + ["" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.6g}" for v in values]
            + [row.get("properties", {}).get(p, "") for p in property_names]
        )
    return buffer.getvalue()


def write_results(folder: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(Path(folder) / "results.json", results_json(rows))
    atomic_write_text(Path(folder) / "results.csv", results_csv(rows))


def samples_jsonl(row: dict[str, Any], task, records) -> str:
    """One JSON line per eval example, like lm-eval's ``--log_samples``: prompt, choices, log-probs, predictions."""
    settings = {"zsl": records.zsl, "icl": records.icl, "ft": records.ft}
    lines = []
    for index, example in enumerate(task.eval_examples):
        choices = len(example.choices)
        lines.append(
            json.dumps(
                {
                    "model_id": row["model_id"],
                    "task": row["task"],
                    "doc_id": index,
                    "prompt": task.prompt(example),
                    "query": example.text,
                    "choices": list(example.choices),
                    "gold": example.gold,
                    **{f"logprobs_{name}": [float(v) for v in record.logprobs[index, :choices]] for name, record in settings.items()},
                    **{f"prediction_{name}": int(record.predictions[index]) for name, record in settings.items()},
                },
                ensure_ascii=False,
            )
        )
    return "\n".join(lines) + "\n"


def write_samples(folder: Path, row: dict[str, Any], task, records) -> Path:
    path = Path(folder) / f"samples_{row['model_id']}_{row['task']}.jsonl"
    atomic_write_text(path, samples_jsonl(row, task, records))
    return path


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("pytest-icl", "torch", "transformers", "lm_eval", "datasets", "pytest"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    return found


# ---- terminal table


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _verdict(properties: dict[str, str]) -> str:
    """``pass``, ``FAIL <names>`` or ``skip``, then the groups that are neither: expected failures,
    the ones that now hold, the undecided (the interval straddles the margin) and the inconclusive
    (a gate is closed)."""
    if not properties:
        return "-"
    failed = [name for name, outcome in properties.items() if outcome in ("failed", "error")]
    if failed:
        head = "FAIL " + ",".join(failed)
    elif any(outcome in ("passed", "xpassed") for outcome in properties.values()):
        head = "pass"
    elif all(outcome == "skipped" for outcome in properties.values()):
        head = "skip"
    else:
        head = "no pass"
    groups = (("xfail", "xfailed"), ("XPASS", "xpassed"), ("undecided", "undecided"), ("inconclusive", "inconclusive"))
    for label, outcome in groups:
        names = [name for name, o in properties.items() if o == outcome]
        if names:
            head += f" {label} " + ",".join(names)
    return head


def _draws_cell(row: dict[str, Any]) -> str:
    draws = row.get("draws", 1)
    return f"{draws} single" if draws == 1 and "verdicts" in row else str(draws)


def _metrics_cell(column: catalogue.Column):
    """A catalogue column's cell: its metrics as ``a/b``."""
    return lambda r: "/".join(_fmt(r["values"][metric], column.digits) for metric in column.metrics)


TABLE_COLUMNS = (
    ("model", lambda r: r["model_id"]),
    ("task", lambda r: r["task"]),
    ("k", lambda r: str(r["shots"])),
    ("n", lambda r: str(r["eval"])),
    ("draws", _draws_cell),
    # "auto" marks an lr chosen for this model on the task's validation split (lr: auto)
    ("lr", lambda r: f"{r['lr']:g}" + (" auto" if r.get("lr_source") in ("validation", "cache") else "")),
    *((column.terminal, _metrics_cell(column)) for column in catalogue.COLUMNS if column.terminal),
    ("result", lambda r: _verdict(r.get("properties", {}))),
)


def format_table(rows: list[dict[str, Any]]) -> list[str]:
    return _aligned([name for name, _ in TABLE_COLUMNS], [[get(row) for _, get in TABLE_COLUMNS] for row in rows])


def _aligned(header: list[str], body: list[list[str]]) -> list[str]:
    cells = [header, *body]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return lines


def control_lines(row: dict[str, Any]) -> list[list[str]]:
    """One line per control check of a row: control, check, real value, control value, verdict.

    How a control is listed is its catalogue row's ``shown``: its checks, or mean ± sd over seeds.
    """
    lines = []
    for name, control in (row.get("controls") or {}).items():
        spec = catalogue.control(name, strict=False)
        lines += _SHOWN[spec.shown](spec, control)
    return lines


def _check_lines(spec: catalogue.Control, control: dict[str, Any]) -> list[list[str]]:
    unjudged = "undefined" if spec.verdict else "reported"  # None: a missing value, or a control reported without a verdict
    return [[spec.name, o["claim"], _fmt(o["value"]), _fmt(o["control"]), _check_verdict(o, unjudged)] for o in control["outcomes"]]


def _check_verdict(outcome: dict[str, Any], unjudged: str) -> str:
    """A check's outcome and the 95% interval of its difference (rows stored before intervals: holds / does not hold)."""
    if "outcome" not in outcome:
        return {True: "holds", False: "does not hold", None: unjudged}[outcome["passed"]]
    if outcome["outcome"] is None:
        return unjudged
    return f"{outcome['outcome']} [{_fmt(outcome['low'])}, {_fmt(outcome['high'])}]"


def _seed_lines(spec: catalogue.Control, control: dict[str, Any]) -> list[list[str]]:
    lines = []
    for metric in spec.over_seeds.terminal:
        stats = control["metrics"].get(metric)
        if stats:
            lines.append([spec.name, f"{metric} over seeds {control['seeds']}", f"{_fmt(stats['mean'])} ± {_fmt(stats['sd'])}", "", ""])
    return lines


_SHOWN = {catalogue.CHECKS: _check_lines, catalogue.OVER_SEEDS: _seed_lines}


def format_controls(rows: list[dict[str, Any]]) -> list[str]:
    """The controls table (empty when no control ran)."""
    body = [[row["model_id"], row["task"], *line] for row in rows for line in control_lines(row)]
    return _aligned(["model", "task", "control", "check", "real", "control", "verdict"], body) if body else []


def format_verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """Per pair and property: metric − control (mean over draws), its 95% interval, the margin, the outcome."""
    body = []
    for row in rows:
        for name, v in (row.get("verdicts") or {}).items():
            interval = "n/a" if v["low"] is None else f"{v['low']:+.3f}…{v['high']:+.3f}"
            estimate = "n/a" if v["estimate"] is None else f"{v['estimate']:+.3f}"
            beside = [c for c in v.get("comparisons", [])[1:]]
            extra = "".join(f"; vs {c['control']}: " + ("n/a" if c["low"] is None else f"{c['low']:+.3f}…{c['high']:+.3f}") for c in beside)
            body.append([row["model_id"], row["task"], name, estimate, interval + extra, f"{v['margin']:+g}", v["outcome"]])
    header = ["model", "task", "property", "metric−control", "95% CI", "margin", "outcome"]
    return _aligned(header, body) if body else []


def format_gates(rows: list[dict[str, Any]]) -> list[str]:
    """Why items are inconclusive (each closed gate, with its numbers), where lr: auto fell back, which layers were left out."""
    lines = []
    for row in rows:
        pair = f"{row['model_id']}-{row['task']}"
        for name, gate in (row.get("gates") or {}).items():
            if not gate["open"]:
                lines.append(f"{pair}: {name} closed: {gate['reason']}")
        if row.get("lr_source") == "fixed" and row.get("lr_reason"):  # lr: auto could not choose
            lines.append(f"{pair}: lr: auto fell back to the fixed lr {row['lr']:g}: {row['lr_reason']}")
        if row.get("left_out_layers"):
            layers = ", ".join(str(i) for i in row["left_out_layers"])
            lines.append(f"{pair}: layer(s) {layers} left out of SimAM∆ (ICL's scores to the query equal ZSL's to rounding)")
    return lines
