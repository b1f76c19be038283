"""``output``: FT moves the next-token distribution toward ICL's (Shen et al. 2024, definitions §12.2).

KL and top-10 overlap of the next-token distributions are computed inside every analysis
(:func:`pytest_icl.analysis.aggregate.analyse`), so this control makes no run: its checks (the
catalogue row's) compare FT's numbers with ZSL's in the real run.
"""

from __future__ import annotations

from pytest_icl.controls.base import Control

CONTROL = Control("output")
