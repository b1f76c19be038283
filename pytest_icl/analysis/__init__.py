"""Analysis: pure functions from run records to metrics, intervals and property verdicts.

No model, no I/O, no pytest, and no import of the engine: :mod:`.metrics` (Dai et al.'s
similarities and their random controls), :mod:`.stats` (aggregation, bootstrap, distribution
comparisons), :mod:`.aggregate` (records → every metric) and :mod:`.properties` (a metric
against its control, by a margin).
"""
