"""Every pytest-icl option in one table: flag, ini key, type, default, and what is allowed.

Each option is a command-line flag and an ini key of the same name (``--icl-shots`` is
``icl_shots``); the command line beats the ini file, which beats the task YAML. Every value is
parsed and checked here, at start: a bad one is a usage error (exit 4) naming the option, the
value and what is allowed, before any model or task is loaded.

The controller-side checks that touch the outside world (is the report folder writable, does
the asked-for GPU exist) live here too, so that a run never gets far before failing. This is
configuration: it reads names from :mod:`pytest_icl.catalogue` and imports none of the machinery
it configures (engine, controls, report), so checking a flag stays cheap.

Example::

    options = parse_options(lambda key: raw.get(key))   # raw: ini/CLI values by key
    options.shots, options.lr                            # None = the task's own value
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_icl import catalogue
from pytest_icl.errors import OptionError, PlacementError, TaskError, UsageError
from pytest_icl.models.loading import ALIASES, DEFAULT_MODEL

CONTROLS = catalogue.control_names()

# ---- parsers: str -> value, raising ValueError("what is allowed"), or a UsageError with the whole reason.
# Each kind of value has one rule, the task file's (pytest_icl.tasks.files): a whole number, a finite
# number, a tolerance mean the same from a flag, an ini key (text or TOML) and a task YAML.


def _whole(text: str, *, low: int) -> int:
    from pytest_icl.tasks.files import whole_number

    number = whole_number(text)
    if number is None or number < low:
        raise ValueError(f"a whole number ≥ {low}")
    return number


def positive_int(text: str) -> int:
    return _whole(text, low=1)


def count(text: str) -> int:
    return _whole(text, low=0)


def task_setting(name: str, allowed: str) -> Callable[[str], Any]:
    """An option that overrides a task setting obeys the task file's own rule (task_files.parse_setting)."""

    def parse(text: str) -> Any:
        from pytest_icl.tasks.files import TaskSettingsError, parse_setting

        try:
            return parse_setting(name, text, where=name)
        except TaskSettingsError:
            raise ValueError(allowed) from None

    return parse


def eval_limit(text: str) -> int:
    """``--icl-limit``: the task rule for a limit, and at least the eval examples a verdict needs."""
    from pytest_icl.tasks.files import MIN_EVAL_EXAMPLES

    allowed = f"a whole number ≥ {MIN_EVAL_EXAMPLES} (a verdict's interval resamples the eval examples; one example gives none)"
    limit = task_setting("limit", allowed)(text)
    if limit < MIN_EVAL_EXAMPLES:
        raise ValueError(allowed)
    return limit


def one_of(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in allowed:
            raise ValueError(" or ".join(allowed) if len(allowed) < 3 else ", ".join(allowed[:-1]) + " or " + allowed[-1])
        return text

    return parse


def device(text: str) -> str:
    """One grammar with the loader: placement's parser decides, the option only words the error."""
    from pytest_icl.models.placement import DEVICE_CHOICES, parse_device

    try:
        return parse_device(text)
    except PlacementError:
        raise ValueError(DEVICE_CHOICES) from None


def dtype(text: str) -> str:
    from pytest_icl.models.placement import DTYPE_CHOICES, parse_dtype

    try:
        return parse_dtype(text)
    except PlacementError:
        raise ValueError(DTYPE_CHOICES) from None


def device_map(text: str) -> str:
    """``auto``, ``balanced``, or a JSON file read now with the loader's rule: a bad file ends the run at start."""
    from pytest_icl.models.placement import device_map_problem

    if text.strip().lower() in ("auto", "balanced"):
        return text.strip().lower()
    path = Path(text).expanduser()
    if not path.is_file():
        raise ValueError("auto, balanced, or the path of an existing JSON file mapping module names to devices")
    problem = device_map_problem(path)
    if problem is not None:
        raise ValueError(f"auto, balanced, or a JSON file holding one object that maps module names to devices ({problem})")
    return str(path.resolve())


def on_off(text: str) -> bool:
    lowered = str(text).strip().lower()
    if lowered in ("on", "true", "yes", "1"):
        return True
    if lowered in ("off", "false", "no", "0"):
        return False
    raise ValueError("on or off")


def controls(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in str(text).split(",") if name.strip())
    unknown = [name for name in names if name not in CONTROLS]
    if unknown or not names:
        raise ValueError(f"a comma-separated list of {', '.join(CONTROLS)}")
    return names


def data_entry(text: str) -> tuple[str, str]:
    """``TASK=DIR`` or ``TASK=FILES``: the files are found and read now (one row each at least, every line valid)."""
    from pytest_icl.tasks.data import local_data_files

    task, sep, path = str(text).partition("=")
    if not sep or not task.strip() or not path.strip():
        raise ValueError("TASK=DIR or TASK=TRAIN_FILE,EVAL_FILE")
    for part in path.split(","):
        if part and not Path(part).expanduser().exists():
            raise ValueError(f"TASK=DIR or TASK=TRAIN_FILE,EVAL_FILE with existing paths ({part} does not exist)")
    try:
        local_data_files(path)
    except TaskError as error:
        raise OptionError(f"{task.strip()}={path}: {error}") from None
    return task.strip(), path


def _named_number(text: str, names: list[str], setting: str, allowed: str) -> tuple[str, float]:
    """``NAME=VALUE`` whose VALUE obeys the task file's rule for ``setting`` (thresholds, tolerances)."""
    from pytest_icl.tasks.files import TaskSettingsError, parse_setting

    name, sep, value = str(text).partition("=")
    name = name.strip().lower()
    if not sep or name not in names:
        raise ValueError(f"NAME=VALUE with NAME one of {', '.join(names)}")
    try:
        return name, parse_setting(setting, {name: value.strip()}, where=setting)[name]
    except TaskSettingsError:
        raise ValueError(f"NAME=VALUE with {allowed} as VALUE ({value.strip()!r} is not {allowed})") from None


def threshold(text: str) -> tuple[str, float]:
    """``PROPERTY=MARGIN``: a margin is a finite number, as in a task file's icl.thresholds."""
    from pytest_icl.analysis.properties import PROPERTIES

    return _named_number(text, list(PROPERTIES), "thresholds", "a finite number")


def tolerance(text: str) -> tuple[str, float]:
    """``METRIC=VALUE``: a metric compared with the baseline, and its absolute tolerance (inf: not checked)."""
    compared = [m.name for m in catalogue.compared_metrics()]
    try:
        return _tolerance(str(text), compared)
    except ValueError as error:
        raise ValueError(f"METRIC=VALUE with METRIC one of {', '.join(compared)} and VALUE ≥ 0 ({error})") from None


def _tolerance(text: str, compared: list[str]) -> tuple[str, float]:
    from pytest_icl.tasks.files import tolerance_number

    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ValueError(f"expected METRIC=VALUE, got {text!r}")
    if name not in compared:
        about = {m.name: m.about for m in catalogue.METRICS}.get(name)
        if about is not None:
            raise ValueError(f"{name} is not compared with the baseline ({about}); compared: {', '.join(compared)}")
        raise ValueError(f"unknown metric {name!r}; compared metrics: {', '.join(compared)}")
    try:
        float(value)
    except ValueError:
        raise ValueError(f"tolerance of {name}: {value!r} is not a number") from None
    number = tolerance_number(value)  # the task file's rule for icl.tolerances
    if number is None:
        raise ValueError(f"tolerance of {name} must be ≥ 0 (inf turns the check off), got {value!r}")
    return name, number


def text_value(text: str) -> str:
    if not str(text).strip():
        raise ValueError("a non-empty value")
    return str(text)


# ---- the table


@dataclass(frozen=True)
class Option:
    flag: str
    parse: Callable[[str], Any]
    help: str
    kind: str = "value"  # "value" | "list" (repeatable) | "flag" (no argument)
    metavar: str = "VALUE"
    old_ini: str | None = None  # the ini key of pytest-icl 0.1, still read with a warning

    @property
    def dest(self) -> str:
        """The argparse dest and the ini key."""
        return self.flag[2:].replace("-", "_")


# Named runs: what a claim of a given strength needs. "paper": Deutch et al.'s point that one
# draw of demonstrations proves little, taken further (10 draws give the interval ~94 % coverage
# where draws disagree, against ~75-87 % with 3), and every control that has a verdict.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"seeds": 10, "controls": (("untrained", "shuffled", "lcgd", "output"),)},
}

# fmt: off
# One row per option reads as the table it is; the formatter would wrap each row over several lines.
OPTIONS: tuple[Option, ...] = (
    Option("--icl-model", text_value, f"model to test: alias, hub id[@revision], local folder or .gguf file (repeatable; default {DEFAULT_MODEL})", "list", "MODEL", "icl_models"),
    Option("--icl-task", text_value, "only these tasks (repeatable); a named task whose data cannot be had fails instead of skipping", "list", "NAME", "icl_task_filter"),
    Option("--icl-shots", task_setting("shots", "a whole number ≥ 1"), "number of demonstrations k (= FT steps); default: the task's", metavar="K"),
    Option("--icl-seed", task_setting("seed", "a whole number from 0 to 2**32 - 1"), "demonstration shuffle seed; default: the task's", metavar="SEED"),
    Option("--icl-lr", task_setting("lr", "a finite number > 0 (e.g. 1e-3), or 'auto' (chosen on the task's validation split)"), "FT learning rate, or 'auto' (chosen per model on the validation split); default: the task's", metavar="LR"),
    Option("--icl-position", task_setting("position", "label or prompt"), "analysed position: label (official code) or prompt", metavar="POSITION"),
    Option("--icl-limit", eval_limit, "eval examples per task: lm-eval's first N documents, as lm_eval --limit N", metavar="N"),
    Option("--icl-device", device, "auto (default), cpu, cuda or cuda:N", metavar="DEVICE"),
    Option("--icl-device-map", device_map, "auto, balanced or a JSON FILE: shard a model too big for one GPU (accelerate)", metavar="MAP"),
    Option("--icl-dtype", dtype, "float32 (default), bfloat16, float16 or auto (bf16 on CUDA); FT updates stay fp32", metavar="DTYPE"),
    Option("--icl-batch-size", positive_int, "eval examples per forward pass (default 16)", metavar="N"),
    Option("--icl-gpus-per-worker", count, "GPUs each pytest-xdist worker gets from the visible list (default: one each when there are enough, else shared round-robin; 0 = no pinning)", metavar="N"),
    Option("--icl-dist", one_of("model", "pair"), "xdist scheduling: model (each model on one worker, default) or pair (spread model × task)", metavar="MODE"),
    Option("--icl-report", text_value, "write results.json, results.csv, samples.jsonl and index.html to this folder", metavar="DIR"),
    Option("--icl-data", data_entry, "TASK=DIR or TASK=TRAIN_FILE,EVAL_FILE: run TASK on local jsonl/csv/parquet files", "list", "TASK=PATH"),
    Option("--icl-threshold", threshold, "PROPERTY=MARGIN: required margin of a property over its control", "list", "PROPERTY=MARGIN", "icl_thresholds"),
    Option("--icl-accuracy-gate", on_off, "on (default): similarity and control items are inconclusive unless ICL beats zero-shot and the constant predictor and FT learned (each reason printed)", metavar="on|off"),
    Option("--icl-controls", controls, f"opt-in control items per pair: {', '.join(CONTROLS)} (comma-separated)", "list", "NAMES"),
    Option("--icl-seeds", positive_int, "demonstration draws per pair (default 3): ZSL once, ICL and FT per draw; 1 = a single draw, marked as such", metavar="S"),
    Option("--icl-shuffled", on_off, "on (default): FT on shuffled labels per draw, which every similarity property must beat too", metavar="on|off"),
    Option("--icl-preset", one_of(*PRESETS), "paper: the claim-grade run (10 draws, every control; about 5x the default's time)", metavar="NAME"),
    Option("--icl-baseline", text_value, "compare each task × model with its row in this JSON file: test_icl[model-task-baseline] fails on a regression", metavar="FILE"),
    Option("--icl-baseline-update", on_off, "write/refresh the --icl-baseline file with this run's rows instead of comparing", "flag"),
    Option("--icl-baseline-model", text_value, "compare with the stored rows of this model (NAME or NAME:DTYPE) instead of the same model's", metavar="NAME"),
    Option("--icl-tolerance", tolerance, "METRIC=VALUE: absolute tolerance of a metric in baseline comparisons", "list", "METRIC=VALUE", "icl_tolerances"),
    Option("--icl-shard", text_value, "run shard I of N (0-based: 0/4 ... 3/4) of the model x task pairs, or N with the index from SLURM_ARRAY_TASK_ID / JOB_COMPLETION_INDEX", metavar="I/N"),
    Option("--icl-rerun", on_off, "compute every pair again even when the --icl-report folder holds its result (default: resume, reusing stored pairs)", "flag"),
)
# fmt: on
BY_DEST = {option.dest: option for option in OPTIONS}


@dataclass(frozen=True)
class IclOptions:
    """The parsed options of one run (None = the task's own setting)."""

    models: tuple[str, ...] = (DEFAULT_MODEL,)
    tasks: tuple[str, ...] = ()  # filter by name; a named task that cannot load fails instead of skipping
    shots: int | None = None
    seed: int | None = None
    lr: float | str | None = None  # a number, "auto", or None (the task's)
    position: str | None = None
    limit: int | None = None
    device: str = "auto"
    device_map: str | None = None
    dtype: str = "float32"
    batch_size: int = 16
    gpus_per_worker: int | None = None  # None: one each when there are enough GPUs, else shared
    dist: str = "model"
    report: Path | None = None
    data: dict[str, str] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    accuracy_gate: bool = True
    controls: tuple[str, ...] = ()
    seeds: int = 3
    shuffled: bool = True
    preset: str | None = None
    baseline: Path | None = None  # --icl-baseline FILE
    baseline_update: bool = False  # --icl-baseline-update: write FILE after the run instead of comparing
    baseline_model: str | None = None  # --icl-baseline-model NAME: compare with NAME's stored rows
    tolerances: dict[str, float] = field(default_factory=dict)  # --icl-tolerance METRIC=VALUE
    shard: str | None = None  # --icl-shard I/N or N (resolved with the environment by the plugin)
    rerun: bool = False  # --icl-rerun: compute pairs the report folder already holds


# A raw value and where it came from ("--icl-shots" or "icl_shots (ini)"), for the messages.
Raw = Callable[[str], "tuple[Any, str] | None"]


def parse_options(raw: Raw, *, ini_dir: Path | None = None) -> IclOptions:
    """Parse and check every option; raises OptionError naming the first bad one."""
    values: dict[str, Any] = {}
    for option in OPTIONS:
        found = raw(option.dest)
        if found is None:
            continue
        value, origin = found
        if option.kind == "flag":
            values[option.dest] = bool(value) if not isinstance(value, str) else _parse(option, value, origin)
        elif option.kind == "list":
            values[option.dest] = [_parse(option, entry, origin) for entry in value]
        else:
            values[option.dest] = _parse(option, value, origin)

    models = values.get("icl_model") or [DEFAULT_MODEL]
    if ini_dir is not None and raw("icl_model") is not None and raw("icl_model")[1].endswith("(ini)"):
        models = [_relative_to(ini_dir, name) for name in models]  # ini paths are relative to the ini file
    baseline = values.get("icl_baseline")
    baseline_update = bool(values.get("icl_baseline_update"))
    baseline_model = values.get("icl_baseline_model")
    if (baseline_update or baseline_model) and not baseline:
        raise OptionError(f"--icl-baseline-{'update' if baseline_update else 'model'} needs --icl-baseline FILE")
    if baseline_update and baseline_model:
        raise OptionError("--icl-baseline-model compares with stored rows; it cannot be combined with --icl-baseline-update")
    report = values.get("icl_report")
    rerun = bool(values.get("icl_rerun"))
    if rerun and not report:
        raise OptionError(
            "--icl-rerun recomputes pairs that an --icl-report folder already holds, and no --icl-report was given; "
            "add --icl-report DIR (without it nothing is stored, so every pair is computed anyway), or drop --icl-rerun"
        )
    # A preset fills what the run did not set itself: an explicit --icl-seeds or --icl-controls wins.
    preset = PRESETS.get(values.get("icl_preset"), {})
    return IclOptions(
        models=tuple(models),
        tasks=tuple(values.get("icl_task") or ()),
        shots=values.get("icl_shots"),
        seed=values.get("icl_seed"),
        lr=values.get("icl_lr"),
        position=values.get("icl_position"),
        limit=values.get("icl_limit"),
        device=values.get("icl_device", "auto"),
        device_map=values.get("icl_device_map"),
        dtype=values.get("icl_dtype", "float32"),
        batch_size=values.get("icl_batch_size", 16),
        gpus_per_worker=values.get("icl_gpus_per_worker"),
        dist=values.get("icl_dist", "model"),
        report=Path(report).expanduser().resolve() if report else None,
        data=dict(values.get("icl_data") or ()),
        thresholds=dict(values.get("icl_threshold") or ()),
        accuracy_gate=values.get("icl_accuracy_gate", True),
        controls=tuple(dict.fromkeys(name for names in (values.get("icl_controls") or preset.get("controls") or ()) for name in names)),
        seeds=values.get("icl_seeds", preset.get("seeds", 3)),
        shuffled=values.get("icl_shuffled", True),
        preset=values.get("icl_preset"),
        baseline=Path(baseline).expanduser().resolve() if baseline else None,
        baseline_update=baseline_update,
        baseline_model=baseline_model,
        tolerances=dict(values.get("icl_tolerance") or ()),
        shard=values.get("icl_shard"),
        rerun=rerun,
    )


def _parse(option: Option, value: Any, origin: str) -> Any:
    try:
        return option.parse(str(value))
    except UsageError as error:  # the parser gave the whole reason (a data file's bad line, ...)
        raise OptionError(f"{origin}: {error}") from None
    except ValueError as error:
        raise OptionError(f"{origin}: {str(value)!r} is not allowed; give {error}") from None


def _relative_to(ini_dir: Path, name: str) -> str:
    """A model path in an ini file means the same wherever pytest is started from."""
    base = name.partition("@")[0]
    if Path(name).expanduser().is_absolute() or base.lower() in {alias.lower() for alias in ALIASES}:
        return name
    candidate = ini_dir / name
    return str(candidate) if candidate.exists() else name


# ---- checks against the outside world (controller, at start)


def check_report_folder(path: Path) -> None:
    """The report folder exists or can be made, and a file can be written in it."""
    import tempfile

    if path.exists() and not path.is_dir():
        raise OptionError(f"--icl-report: {str(path)!r} is an existing file, not a folder; give a folder path (it is created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".pytest-icl-probe-"):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise OptionError(f"--icl-report: cannot write in {str(path)!r} ({reason}); give a writable folder") from None


def check_device(spec: str) -> None:
    """A CUDA device asked for by name must exist (``auto`` and ``cpu`` always do)."""
    if not spec.startswith("cuda"):
        return
    from pytest_icl.models.placement import PlacementError, resolve_device

    try:
        resolve_device(spec)
    except PlacementError as error:
        raise OptionError(str(error)) from None


# ---- the environment, at start: each variable pytest-icl reads has a value of its kind (the hub's
# are models.hub's to judge; the shard indices are sharding.resolve_shard's, also read at start).


def check_environment(environ: Mapping[str, str]) -> None:
    """Raise OptionError naming the first environment variable whose value pytest-icl cannot use."""
    from pytest_icl.models.hub import environment_problem

    cache = environ.get("PYTEST_ICL_CACHE")
    if cache:
        path = Path(cache).expanduser()
        existing = next((place for place in (path, *path.parents) if place.exists()), path)
        if existing.exists() and not existing.is_dir():
            where = "it is a file, not a folder" if existing == path else f"{existing} is a file, so no folder can be made in it"
            raise OptionError(
                f"PYTEST_ICL_CACHE={cache!r}: {where}, and pytest-icl keeps its model cache there; point it at a folder "
                "(it is created if missing), or unset it to use ~/.cache/pytest-icl"
            )
    problem = environment_problem(environ)
    if problem:
        raise OptionError(problem)
