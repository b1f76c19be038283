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

import glob
import os
from pathlib import Path
from typing import Any

from pytest_icl.tasks.files import TaskDataMissing, TaskSettingsError

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
            if isinstance(name, str) and "://" not in name and not glob.glob(os.path.expanduser(name)):
                raise TaskDataMissing(
                    f"{origin}: the data file {name} (dataset_kwargs.data_files, split {split!r}) does not exist{where}. "
                    "Fix the path in the task file or create the file."
                )
    data_dir = kwargs.get("data_dir")
    if isinstance(data_dir, str) and "://" not in data_dir and not Path(data_dir).expanduser().is_dir():
        raise TaskDataMissing(f"{origin}: the data folder {data_dir} (dataset_kwargs.data_dir) does not exist{where}.")


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
            raise TaskSettingsError(
                f"--icl-data folder {folder} has {len(paths)} {stem} files ({', '.join(p.name for p in paths)}); keep one"
            )
    scored = found["test"] or found["eval"]
    if not found["train"] or not (scored or found["validation"]):
        raise TaskDataMissing(
            f"--icl-data folder {folder} needs a train.* file and a test.* file (the scored split), and may hold a "
            "validation.* file (where lr: auto chooses the FT lr); with no test.*, validation.* is scored."
        )
    if not scored:
        return [str(found["train"][0]), str(found["validation"][0])]
    return [str(p[0]) for p in (found["train"], found["validation"], scored) if p]


def local_data_config(config: dict[str, Any], data: str) -> dict[str, Any]:
    """Point a task at local files: ``DIR``, ``TRAIN,EVAL`` or ``TRAIN,VALIDATION,TEST``.

    The first file is the demonstration pool (split ``train``), the last the scored split
    (``test``), and a middle one the ``validation`` split that ``lr: auto`` chooses the FT lr on.
    The task's own splits, hub dataset and loader are replaced; everything else (templates,
    ``fewshot_config`` and so the demonstration seed) is kept.
    """
    parts = [p for p in data.split(",") if p]
    if len(parts) == 1 and Path(parts[0]).expanduser().is_dir():
        parts = _folder_files(Path(parts[0]).expanduser())
    if len(parts) not in (2, 3):
        raise TaskSettingsError(f"--icl-data expects TASK=DIR, TASK=TRAIN_FILE,EVAL_FILE or TASK=TRAIN,VALIDATION,TEST files, got {data!r}")
    paths = [Path(p).expanduser().resolve() for p in parts]
    for path in paths:
        if not path.is_file():
            raise TaskDataMissing(f"--icl-data: no such file {path}")
    suffixes = {p.suffix for p in paths}
    if len(suffixes) != 1 or next(iter(suffixes)) not in _BUILDERS or ".txt" in suffixes:
        raise TaskSettingsError(
            f"--icl-data files must {'both' if len(paths) == 2 else 'all'} be .jsonl, .json, .csv or .parquet, got {[p.name for p in paths]}"
        )
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
