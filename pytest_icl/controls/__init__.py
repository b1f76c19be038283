"""Controls: the runs Dai et al. lacked (Deutch et al. 2024, Shen et al. 2024), each judged against the real run.

One module per control (untrained, shuffled, lcgd, seeds, output), each a row of
:data:`pytest_icl.catalogue.CONTROLS`; :mod:`.base` is what they share, :mod:`.pair` runs a pair's.
"""
