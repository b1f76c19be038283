"""Tasks: lm-eval task YAMLs, built-in names or inline configs, frozen into an ICL task.

A small facade (:mod:`.loading`: ``TaskSource``, ``load_task``, ``IclTask``) over private
readers: :mod:`.files` reads task YAMLs at collection without lm-eval, :mod:`.data` resolves
data files (relative to the YAML, or ``--icl-data``), :mod:`.fewshot` makes lm-eval's own sampler
pick one fixed set of demonstrations (``shuffle_seed_<s>``, k from ``num_fewshot``). Nothing here
imports torch or lm-eval at import time.
"""

from pytest_icl.tasks.loading import IclTask, TaskSettings, TaskSource, load_task

__all__ = ["IclTask", "TaskSettings", "TaskSource", "load_task"]
