"""Importing the plugin stays cheap: pytest loads it on every run, even ``--collect-only``.

torch, transformers, lm-eval and datasets take seconds to import; the plugin must reach them
only when a test actually runs an analysis. Checked in a fresh interpreter, since this one has
imported them already.
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "transformers", "lm_eval", "datasets", "pandas", "matplotlib", "scipy")


def _imported_after(statement: str) -> list[str]:
    code = f"import json, sys; {statement}; print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_the_plugin_imports_no_heavy_library():
    assert _imported_after("import pytest_icl.plugin") == []


def test_the_check_sees_a_heavy_import():
    # The probe itself must be able to fail: importing the metrics pulls in torch.
    assert _imported_after("import pytest_icl.analysis.metrics") == ["torch"]
