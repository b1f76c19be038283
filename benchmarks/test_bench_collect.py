"""``pytest --collect-only`` on the shipped suite stays under 2 s (run on demand).

The plugin is imported on every pytest run, so it must not import torch, transformers or lm-eval
(tests/unit/test_plugin_import.py checks that); this measures what a user waits for.
Measured on the 2-core CPU: 0.6 s.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 2.0


def _collect() -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tasks"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip


def test_collect_only_of_the_shipped_suite(benchmark):
    result = benchmark.pedantic(_collect, rounds=3, iterations=1)
    assert " tests collected in " in result.stdout
    assert benchmark.stats.stats.median < TARGET_S
