"""pytest-icl: does a causal LM's in-context learning behave like finetuning on the same demonstrations?

The public API, in data-flow order (imported lazily, so ``import pytest_icl`` stays cheap and the
pytest plugin does not pull in torch at collection)::

    from pytest_icl import load_model, load_task, TaskSource, run_settings, analyse, check_property

    lm = load_model("smollm2-135m")
    task = load_task(TaskSource.from_path("tasks/antonym_choice/antonym_choice.yaml"), limit=32)
    records = run_settings(lm.model, lm.tokenizer, task)        # ZSL, ICL, FT
    analysis = analyse(records)                                  # every metric and control
    check_property("simaou", analysis.values, margin=0.0).passed

    results = pytest_icl.load_results("icl-report")             # a report folder as DataFrames

Or the whole pipeline in one call, as the pytest plugin runs it (lr auto, controls, samples)::

    from pytest_icl import PipelineSettings, run_pipeline

    result = run_pipeline(lm, TaskSource.from_path("tasks/antonym_choice/antonym_choice.yaml"), PipelineSettings(limit=32))
    result.check("simaou").passed
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
    "IclError": "errors", "UsageError": "errors", "ModelError": "errors", "TaskError": "errors",
    "ModelSpec": "models.loading", "LoadedModel": "models.loading", "resolve_model": "models.loading",
    "load_model": "models.loading",
    "TaskSource": "tasks.loading", "IclTask": "tasks.loading", "load_task": "tasks.loading",
    "Records": "engine.runs", "run_settings": "engine.runs",
    "finetuned": "engine.finetune",
    "Analysis": "analysis.aggregate", "analyse": "analysis.aggregate",
    "PROPERTIES": "analysis.properties", "PropertyCheck": "analysis.properties", "check_property": "analysis.properties",
    "IclOptions": "options",
    "IclResult": "pipeline", "PipelineSettings": "pipeline", "run_pipeline": "pipeline",
    "Results": "report.results", "load_results": "report.results",
}  # fmt: skip

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_icl' has no attribute {name!r}")
    target = "load" if name == "load_results" else name
    return getattr(import_module(f"pytest_icl.{module}"), target)
