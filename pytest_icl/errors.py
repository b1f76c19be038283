"""Every error and warning pytest-icl raises, under one root each.

Callers catch :class:`IclError` once; what a catch site does depends on *where* it is, not on
which subclass arrived (at start: a usage error, exit 4; inside a pair: that pair's items fail
with the message; elsewhere: re-raised). The subclasses exist so a user or a test can tell the
causes apart, never so a catch site has to list them. Every message is one paragraph that says
what is wrong and what to do.

    IclError
    ├── UsageError            a value the user gave is not allowed (at start: exit 4)
    │   ├── OptionError       a command-line flag or ini key
    │   ├── PlacementError    a device, dtype or device map
    │   ├── SchedulingError   GPUs for pytest-xdist workers
    │   └── BaselineError     the --icl-baseline file
    ├── ModelError            a model cannot be resolved or loaded
    │   ├── UnsupportedArchitecture
    │   └── EmbeddedModelMissing
    └── TaskError             a task definition or its data cannot be used
        ├── TaskUnavailable   hub data that cannot be had here (offline paper tasks skip)
        ├── TaskSettingsError a pytest-icl setting in a task file (or its override)
        ├── TaskDefinitionError
        │   └── NoValidationSplit
        ├── TaskDataMissing
        └── TaskDataInvalid   a local data file that cannot be read as rows (names the file, the line)

    IclWarning                the run works around something the user should know
    ├── TaskWarning
    │   └── TaskDeprecationWarning
    └── CacheWarning

This module imports nothing: every layer may use it.
"""

from __future__ import annotations


class IclError(Exception):
    """The root of pytest-icl's errors; the message is one paragraph that says what to do."""


class UsageError(IclError, ValueError):
    """A value given by the user is not allowed; found at start it ends the run with exit code 4."""


class OptionError(UsageError):
    """A bad option value; the message names the option, the value and what is allowed."""


class PlacementError(UsageError):
    """A device, dtype or device map cannot be used; the message says what to do."""


class SchedulingError(UsageError):
    """Workers cannot be given the GPUs asked for; the message says what to change."""


class BaselineError(UsageError):
    """The baseline file cannot be used; the message names the file and says what to do."""


class ModelError(IclError):
    """A model cannot be resolved or loaded; the message says how to fix it."""


class UnsupportedArchitecture(ModelError):
    """The model's ``model_type`` has no entry in the architecture table."""


class EmbeddedModelMissing(ModelError):
    """The package that carries an embedded model is not installed."""


class TaskError(IclError):
    """A task definition or its data cannot be used; the message says what to do."""


class TaskUnavailable(TaskError):
    """A hub dataset that cannot be had here (offline, not in the Hugging Face cache)."""


class TaskSettingsError(TaskError):
    """A bad pytest-icl setting (``metadata.icl`` key or a command-line override): shots, seed, lr, ..."""


class TaskDefinitionError(TaskError):
    """The lm-eval definition cannot be used (not valid YAML, no ``doc_to_choice``, ...)."""


class NoValidationSplit(TaskDefinitionError):
    """``split="validation"`` was asked of a task that declares no validation split."""


class TaskDataMissing(TaskError):
    """A local data file the task names does not exist (a broken task, not an offline hub)."""


class TaskDataInvalid(TaskError):
    """A local data file that is there but cannot be read as rows: a line that is not valid JSON,
    a CSV row of the wrong width, no rows at all. The message names the file and, where known, the line."""


class IclWarning(UserWarning):
    """The root of pytest-icl's warnings: the run goes on, the user should know."""


class TaskWarning(IclWarning):
    """Something about a task that the run works around, and the user should know."""


class TaskDeprecationWarning(TaskWarning, FutureWarning):
    """A task file written in a form pytest-icl still reads but will stop reading."""


class CacheWarning(IclWarning):
    """The cache was damaged and has been rebuilt (the run goes on)."""
