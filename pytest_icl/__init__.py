"""pytest-icl: does a causal LM's in-context learning behave like finetuning on the same demonstrations?

The public API, in data-flow order (imported lazily, so ``import pytest_icl`` stays cheap and the
pytest plugin does not pull in torch at collection)::

    from pytest_icl import load_model, load_task, TaskSource, run_settings, analyse, check_property

    lm = load_model("smollm2-135m")
    task = load_task(TaskSource.from_path("tasks/antonym_choice/antonym_choice.yaml"), limit=32)
    records = run_settings(lm.model, lm.tokenizer, task)        # ZSL, ICL, FT
    analysis = analyse(records)                                  # every metric and control
    check_property("simaou", analysis.values, margin=0.0).passed

    results = pytest_icl.results.load("icl-report")              # a report folder as DataFrames
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pytest-icl")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0.0.0+unknown"

# name -> module that defines it
_PUBLIC = {
    "ModelError": "models", "ModelSpec": "models", "LoadedModel": "models", "resolve_model": "models", "load_model": "models",
    "TaskError": "tasks", "TaskSource": "tasks", "IclTask": "tasks", "load_task": "tasks",
    "Records": "runs", "run_settings": "runs",
    "finetuned": "finetune",
    "Analysis": "analysis", "analyse": "analysis",
    "PROPERTIES": "properties", "check_property": "properties",
    "IclOptions": "options",
    "Results": "results", "load_results": "results",
}  # fmt: skip

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_icl' has no attribute {name!r}")
    target = "load" if name == "load_results" else name
    return getattr(import_module(f"pytest_icl.{module}"), target)
