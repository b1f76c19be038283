"""The pre-0.2 home of :func:`load_yaml_relative_files`, kept because task YAMLs name it.

A task file says ``custom_dataset: !function pytest_icl.task_data.load_yaml_relative_files``;
lm-eval resolves that dotted path at load time, so moving the function would break every task
file a user copied from an earlier version. New task files name
``pytest_icl.tasks.data.load_yaml_relative_files``.
"""

from pytest_icl.tasks.data import load_yaml_relative_files

__all__ = ["load_yaml_relative_files"]
