"""Fixtures for the integration tests: throwaway pytest projects driven through pytester.

Every test builds a small project (``tasks/<name>/<name>.yaml`` plus jsonl data, an lm-eval
``multiple_choice`` task with an ``icl:`` key) and runs pytest on it in a subprocess, against a
tiny random model saved once per session (``tests/tiny_models.py``). The subprocess keeps
torch, transformers and the Hugging Face environment variables out of this process.

A tiny random model has near-chance accuracy, so the tests never assert that a property holds
for it. They force outcomes with thresholds instead: ``accuracy=-1`` always passes
(an accuracy difference is at least -1) and ``NAME=2`` always fails (no difference reaches 2).

Costs: an inner run that analyses a task takes ~10-15 s on a 2-core machine, almost all of it
importing torch, transformers and lm-eval; one that stops at configuration or collection takes
~1-2 s. So the expensive runs are shared: the two "suite" runs (2 models x 2 tasks, with and
without ``-n 2``; ``serial_run`` / ``xdist_run``) run once per session and several test files
read them, and a few files run one module-scoped project (``icl_project.run_pytest``) that
their tests inspect. The ``plugin_args`` fixture picks a suite run in the syrupy style: tests
that take it run once without and once with pytest-xdist.

Models are always passed as ``--icl-model=PATH``: pytest chooses its rootdir and ini file before
plugin options are known, so in ``--icl-model PATH`` an existing PATH counts as a test path there,
and a project's ini file is ignored when the model lives outside the project.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.icl_project import (
    LEAKY_VARIABLES,
    IclProject,
    SuiteRun,
    hermetic_env,
    run_suite,
)
from tests.tiny_models import save_tiny_model


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, value in hermetic_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    for name in LEAKY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


# ---- models


@pytest.fixture(scope="session")
def tiny_models_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session")
def tiny_gpt2(tiny_models_folder: Path) -> Path:
    """A tiny random GPT-2 folder; its model id is the folder name, ``tiny-gpt2``."""
    return save_tiny_model("gpt2", tiny_models_folder / "tiny-gpt2")


@pytest.fixture(scope="session")
def tiny_gpt_neo(tiny_models_folder: Path) -> Path:
    """A tiny random GPT-Neo folder (one global, one local attention layer): ``tiny-gpt-neo``."""
    return save_tiny_model("gpt_neo", tiny_models_folder / "tiny-gpt-neo")


# ---- projects and the shared suite runs (2 models x 2 tasks, serial and with xdist)


@pytest.fixture
def project(pytester: pytest.Pytester, tiny_gpt2: Path) -> IclProject:
    return IclProject(pytester, tiny_gpt2)


@pytest.fixture(scope="session")
def serial_run(tmp_path_factory, tiny_gpt2, tiny_gpt_neo) -> SuiteRun:
    return run_suite(tmp_path_factory.mktemp("suite-serial"), [tiny_gpt2, tiny_gpt_neo], [])


@pytest.fixture(scope="session")
def xdist_run(tmp_path_factory, tiny_gpt2, tiny_gpt_neo) -> SuiteRun:
    return run_suite(tmp_path_factory.mktemp("suite-xdist"), [tiny_gpt2, tiny_gpt_neo], ["-n", "2"])


@pytest.fixture(scope="session", params=[[], ["-n", "2"]], ids=["serial", "xdist"])
def plugin_args(request) -> list[str]:
    """Extra pytest arguments: none, or ``-n 2`` (syrupy's pattern for testing a plugin under xdist)."""
    return request.param


@pytest.fixture
def suite_run(request, plugin_args) -> SuiteRun:
    """The shared 2 models x 2 tasks run, made with ``plugin_args``."""
    return request.getfixturevalue("xdist_run" if plugin_args else "serial_run")
