"""``lcgd``: FT with Deutch et al.'s layer-causal GD (``engine.finetune``), reported beside GD (definitions §12.1.4).

Another, arguably fairer FT, not a control with an expected winner: its catalogue row has no
verdict, so the checks put GD's numbers beside LCGD's.
"""

from __future__ import annotations

from pytest_icl.controls.base import Control


class Lcgd(Control):
    def variant_runs(self, model, tokenizer, task, base, *, seed, common):
        from pytest_icl.engine import runs

        return {"lcgd": lambda: runs.run_settings(model, tokenizer, task, ft_objective="lcgd", reuse=base, **common)}


CONTROL = Lcgd("lcgd")
