"""``output``: FT moves the next-token distribution toward ICL's (Shen et al. 2024, definitions §12.2).

KL and top-10 overlap of the next-token distributions are computed inside every analysis, and
the default shuffled-label FT run gives the same numbers for FT on shuffled labels, so this
control makes no run of its own: its checks (the catalogue row's) ask that real FT's next-token
distribution be closer to ICL's than shuffled-label FT's is. Compared with ZSL instead, the check
passed for shuffled labels wherever it passed for real FT: any FT moves the output toward the
label words, which says nothing about learning the demonstrations' mapping. Each check is
decided over the draws by the interval rule of the properties.
"""

from __future__ import annotations

from pytest_icl.controls.base import Control


class Output(Control):
    needs = "it reads the shuffled-label FT of every draw: run with --icl-shuffled on"


CONTROL = Output("output")
