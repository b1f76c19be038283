"""Keep ``pytest tests`` from running the examples against the default model by accident.

The examples run only when a model is named: ``pytest tests/examples --icl-model <model>``
(or ``icl_model`` in the ini file). Otherwise they are skipped, saying so; the default model
(SmolLM2-135M) would take minutes on a CPU.
"""

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("icl_model") or config.getini("icl_model"):
        return
    skip = pytest.mark.skip(reason="example: pass --icl-model MODEL to run it (e.g. --icl-model gpt2)")
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(skip)
