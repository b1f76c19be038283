"""Keep ``pytest tests`` from running the examples against the default model by accident.

The examples run only when a model is named: ``pytest tests/examples --icl-model smollm2-135m``
(the embedded model; or ``icl_model`` in the ini file). Otherwise they are skipped, and the
summary says how to run them.
"""

import os
from pathlib import Path

import pytest

HERE = Path(__file__).parent
REASON = "example: needs a model named"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("icl_model") or config.getini("icl_model"):
        return
    skip = pytest.mark.skip(reason=f"{REASON}; run: {_command(config)}")
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    """Said once, without -rs: how to run the examples that were skipped."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if REASON in str(getattr(r, "longrepr", ""))]
    if skipped:
        terminalreporter.write_line(f"{len(skipped)} example test(s) skipped, no model named; run them with: {_command(config)}")


def _command(config: pytest.Config) -> str:
    return f"pytest {os.path.relpath(HERE, config.invocation_params.dir)} --icl-model smollm2-135m"
