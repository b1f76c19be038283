"""The engine: token ids, attention capture, K/V finetuning and the three runs (ZSL, ICL, FT).

:mod:`.encoding` tokenises as lm-eval's HF backend, :mod:`.capture` records each attention
layer at the analysed position, :mod:`.finetune` is Dai et al.'s FT setting, :mod:`.runs`
scores the three settings into records and :mod:`.tune` chooses an lr on a validation split.
"""
