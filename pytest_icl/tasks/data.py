"""Where a task's data comes from: data files relative to the task YAML, ``--icl-data`` files.

lm-eval hands ``dataset_kwargs.data_files`` to ``datasets.load_dataset``, which reads relative
paths from the working directory. pytest-icl reads them from the task YAML's folder instead, so
a task folder works wherever it is run from; for ``lm_eval`` itself the shipped YAMLs load their
files through :func:`load_yaml_relative_files` (``custom_dataset: !function
pytest_icl.tasks.data.load_yaml_relative_files``), which does the same inside lm-eval.

A named local file that is missing is :class:`TaskDataMissing`, a broken task, never the
"unavailable offline" skip that only hub datasets get.

Example::

    config = absolute_data_files(config, yaml_path.parent)
    check_data_files(config, origin=str(yaml_path), base=yaml_path.parent)
    config = local_data_config(config, "train.jsonl,test.jsonl")      # --icl-data TASK=TRAIN,EVAL
    config = local_data_config(config, "data/sst2")   # --icl-data TASK=DIR: train.*, validation.*, test.*
"""

from __future__ import annotations

import csv
import glob
import json
import os
from pathlib import Path
from typing import Any

from pytest_icl.errors import TaskDataInvalid
from pytest_icl.tasks.files import MIN_EVAL_EXAMPLES, TaskDataMissing, TaskSettingsError

_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}


def _map_paths(value: Any, change) -> Any:
    if isinstance(value, str):
        return change(value)
    if isinstance(value, list):
        return [_map_paths(v, change) for v in value]
    if isinstance(value, dict):
        return {k: _map_paths(v, change) for k, v in value.items()}
    return value


def _relative_to(base: Path):
    def absolute(value: str) -> str:
        if "://" in value:
            return value
        path = Path(value).expanduser()
        return str(path if path.is_absolute() else base / path)

    return absolute


def load_yaml_relative_files(*, data_files: Any, config_source: str | None = None, **_ignored: Any):
    """lm-eval ``custom_dataset``: ``datasets.load_dataset`` on ``data_files`` read relative to the YAML.

    The shipped YAMLs say ``custom_dataset: !function pytest_icl.tasks.data.load_yaml_relative_files``.
    lm-eval calls it with the task's ``metadata`` and ``dataset_kwargs`` as keywords; its
    ``metadata.config_source`` is the YAML's path when lm-eval read the file itself (pytest-icl
    passes absolute paths, and lm-eval then says ``"inline"``). The builder (json, csv, parquet,
    text) follows the files' suffix; other ``dataset_kwargs`` than ``data_files`` are not used.
    """
    import datasets

    base = Path(config_source).parent if config_source and config_source != "inline" else Path.cwd()
    files = _map_paths(data_files, _relative_to(base))
    names = (
        [files]
        if isinstance(files, str)
        else [f for v in (files.values() if isinstance(files, dict) else files) for f in ([v] if isinstance(v, str) else v)]
    )
    builders = {_BUILDERS.get(Path(n).suffix) for n in names}
    if len(builders) != 1 or None in builders:
        raise ValueError(f"load_yaml_relative_files: data_files must all be .jsonl/.json, .csv, .parquet or .txt, got {names}")
    for name in names:
        if "://" not in name:
            for path in glob.glob(os.path.expanduser(name)):
                check_rows(Path(path))
    return datasets.load_dataset(builders.pop(), data_files=files)


def absolute_data_files(config: dict[str, Any], base: Path) -> dict[str, Any]:
    kwargs = config.get("dataset_kwargs")
    if not isinstance(kwargs, dict):
        return config
    kwargs = {k: _map_paths(v, _relative_to(base)) if k in ("data_files", "data_dir") else v for k, v in kwargs.items()}
    return {**config, "dataset_kwargs": kwargs}


def check_data_files(config: dict[str, Any], *, origin: str, base: Path | None) -> None:
    """A named local data file that is not there is a broken task (TaskDataMissing), not an offline hub."""
    kwargs = config.get("dataset_kwargs") if isinstance(config.get("dataset_kwargs"), dict) else {}
    where = f" (relative data_files are read from the task YAML's folder, {base})" if base else ""
    files = kwargs.get("data_files")
    for split, value in files.items() if isinstance(files, dict) else [("train", files)] if files else []:
        for name in [value] if isinstance(value, str) else value if isinstance(value, list) else []:
            if not isinstance(name, str) or "://" in name:
                continue
            found = glob.glob(os.path.expanduser(name))
            if not found:
                raise TaskDataMissing(
                    f"{origin}: the data file {name} (dataset_kwargs.data_files, split {split!r}) does not exist{where}. "
                    "Fix the path in the task file or create the file."
                )
            for path in found:
                try:
                    check_rows(Path(path))
                except TaskDataInvalid as error:
                    raise TaskDataInvalid(f"{origin}: split {split!r}: {error}") from None
    data_dir = kwargs.get("data_dir")
    if isinstance(data_dir, str) and "://" not in data_dir and not Path(data_dir).expanduser().is_dir():
        raise TaskDataMissing(f"{origin}: the data folder {data_dir} (dataset_kwargs.data_dir) does not exist{where}.")


# ---- a data file's rows, read before datasets does: its errors name neither the file nor the row

_CHECKED: dict[tuple[str, int, int], int] = {}  # (path, size, mtime) -> rows, of files found sound
_CHECKED_BYTES = 64 << 20  # past this much of a file, datasets' own errors have to do


def check_rows(path: Path) -> int:
    """The rows of a local .jsonl/.json/.csv/.parquet file, or TaskDataInvalid naming the file and the line.

    Refused: a line that is not valid JSON or not one JSON object, a column whose JSON type changes
    (datasets needs one per column), a CSV row wider or narrower than the header, no rows at all.
    Other suffixes are left to datasets. A file is read once per process while it is unchanged.
    """
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _CHECKED:
        reader = {".jsonl": _jsonl_file, ".json": _json_document, ".csv": _csv_rows, ".parquet": _parquet_rows}.get(path.suffix.lower())
        if reader is None:
            return -1  # unknown: datasets decides
        try:
            rows = reader(path)
        except UnicodeDecodeError as error:
            raise TaskDataInvalid(f"{path}: not UTF-8 text ({error.reason} at byte {error.start}); save the file as UTF-8") from None
        if rows == 0:
            raise TaskDataInvalid(f"{path} has no rows; fill it, or point the task at the file that holds them")
        _CHECKED[key] = rows
    return _CHECKED[key]


_KINDS = {bool: "true/false", int: "a number", float: "a number", str: "text", list: "a list", dict: "an object"}


def _jsonl_file(path: Path) -> int:
    with path.open("rb") as handle:
        return _json_lines(path, handle)


def _json_lines(path: Path, lines) -> int:
    rows, kinds, read = 0, {}, 0
    for number, raw in enumerate(lines, 1):
        read += len(raw)
        if read > _CHECKED_BYTES:
            break
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.strip())
        except UnicodeDecodeError as error:
            raise TaskDataInvalid(f"{path} line {number}: not UTF-8 text ({error.reason}); save the file as UTF-8") from None
        except ValueError as error:
            where = f"{error.msg} at column {error.colno}" if isinstance(error, json.JSONDecodeError) else str(error)
            raise TaskDataInvalid(f"{path} line {number}: not valid JSON: {where}; each line must be one JSON object") from None
        _check_row(path, number, row, kinds)
        rows += 1
    return rows


def _check_row(path: Path, number: int, row: Any, kinds: dict[str, tuple[str, int]]) -> None:
    if not isinstance(row, dict):
        raise TaskDataInvalid(
            f'{path} line {number}: a row must be a JSON object ({{"column": value, ...}}), not {_KINDS.get(type(row), "null")}'
        )
    for column, value in row.items():
        kind = _KINDS.get(type(value))
        if kind is None:
            continue  # null fits any column
        first = kinds.setdefault(column, (kind, number))
        if first[0] != kind:
            raise TaskDataInvalid(
                f"{path} line {number}: column {column!r} is {kind} here but {first[0]} on line {first[1]}; "
                "datasets needs one type per column"
            )


def _json_document(path: Path) -> int:
    """A .json file: one JSON array of row objects, or JSON lines (datasets reads both)."""
    if path.stat().st_size > _CHECKED_BYTES:
        return -1  # too big to read twice: datasets decides
    data = path.read_bytes()
    try:
        document = json.loads(data)
    except ValueError:
        return _json_lines(path, data.splitlines(keepends=True))
    if isinstance(document, dict):
        document = [document]
    if not isinstance(document, list):
        raise TaskDataInvalid(f"{path}: must hold a JSON array of row objects, or one JSON object per line")
    kinds: dict[str, tuple[str, int]] = {}
    for index, row in enumerate(document):
        _check_row(path, index + 1, row, kinds)
    return len(document)


def _csv_rows(path: Path) -> int:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            return 0
        rows = 0
        for row in reader:
            if not row:
                continue  # a blank line, which pandas skips too
            if len(row) != len(header):
                raise TaskDataInvalid(
                    f"{path} line {reader.line_num}: {len(row)} fields, but the header (line 1) has {len(header)}; "
                    "quote a field that holds a comma"
                )
            rows += 1
            if rows >= _CHECKED_BYTES // 64:  # about as far as the JSON files are read
                break
    return rows


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet

    try:
        return pyarrow.parquet.ParquetFile(path).metadata.num_rows
    except Exception as error:  # noqa: BLE001 - pyarrow raises its own types for a damaged file
        raise TaskDataInvalid(f"{path}: not a parquet file pyarrow can read ({type(error).__name__}: {error})") from None


# ---- --icl-data


def _folder_files(folder: Path) -> list[str]:
    """``train.*``, ``validation.*`` and ``test.*`` of a ``--icl-data`` folder, as a file list.

    Without a test file the validation (or ``eval.*``) file is the one scored, as lm-eval scores
    its validation split when there is no test split; the FT lr then has no split of its own.
    """
    found = {}
    for stem in ("train", "validation", "test", "eval"):
        found[stem] = sorted(p for p in folder.iterdir() if p.stem == stem and p.suffix in _BUILDERS)
    for stem, paths in found.items():
        if len(paths) > 1:
            raise TaskSettingsError(f"folder {folder} has {len(paths)} {stem} files ({', '.join(p.name for p in paths)}); keep one")
    scored = found["test"] or found["eval"]
    if not found["train"] or not (scored or found["validation"]):
        raise TaskDataMissing(
            f"folder {folder} needs a train.* file and a test.* file (the scored split), and may hold a "
            "validation.* file (where lr: auto chooses the FT lr); with no test.*, validation.* is scored."
        )
    if not scored:
        return [str(found["train"][0]), str(found["validation"][0])]
    return [str(p[0]) for p in (found["train"], found["validation"], scored) if p]


def local_data_files(data: str) -> list[Path]:
    """The files of ``DIR``, ``TRAIN,EVAL`` or ``TRAIN,VALIDATION,TEST``, each checked (:func:`check_rows`).

    The plugin asks at start, so that a folder without ``train.*`` or a bad line ends the run with exit 4.
    """
    parts = [p for p in data.split(",") if p]
    if len(parts) == 1 and Path(parts[0]).expanduser().is_dir():
        parts = _folder_files(Path(parts[0]).expanduser())
    if len(parts) not in (2, 3):
        raise TaskSettingsError(f"give TASK=DIR, TASK=TRAIN_FILE,EVAL_FILE or TASK=TRAIN,VALIDATION,TEST files, got {data!r}")
    paths = [Path(p).expanduser().resolve() for p in parts]
    for path in paths:
        if not path.is_file():
            raise TaskDataMissing(f"no such file {path}")
    suffixes = {p.suffix for p in paths}
    if len(suffixes) != 1 or next(iter(suffixes)) not in _BUILDERS or ".txt" in suffixes:
        raise TaskSettingsError(
            f"--icl-data files must {'both' if len(paths) == 2 else 'all'} be .jsonl, .json, .csv or .parquet, got {[p.name for p in paths]}"
        )
    rows = [check_rows(path) for path in paths]
    if 0 <= rows[-1] < MIN_EVAL_EXAMPLES:
        raise TaskDataInvalid(f"{paths[-1]} has {rows[-1]} row; the scored split needs at least {MIN_EVAL_EXAMPLES} eval examples")
    return paths


def local_data_config(config: dict[str, Any], data: str) -> dict[str, Any]:
    """Point a task at local files: ``DIR``, ``TRAIN,EVAL`` or ``TRAIN,VALIDATION,TEST``.

    The first file is the demonstration pool (split ``train``), the last the scored split
    (``test``), and a middle one the ``validation`` split that ``lr: auto`` chooses the FT lr on.
    The task's own splits, hub dataset and loader are replaced; everything else (templates,
    ``fewshot_config`` and so the demonstration seed) is kept.
    """
    paths = local_data_files(data)
    splits = dict(zip(("train", "validation", "test") if len(paths) == 3 else ("train", "test"), map(str, paths)))
    config = {k: v for k, v in config.items() if k not in ("validation_split", "dataset_name", "custom_dataset")}
    config.update(
        dataset_path=_BUILDERS[paths[0].suffix],
        dataset_kwargs={"data_files": splits},
        training_split="train",
        fewshot_split="train",
        test_split="test",
    )
    if "validation" in splits:
        config["validation_split"] = "validation"
    return config
