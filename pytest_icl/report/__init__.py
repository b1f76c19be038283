"""Report: result rows, the terminal table, results files, HTML, plots and baselines.

Reads rows (plain JSON-able dicts) and the catalogue; never imports the engine, so a saved
report folder can be read, compared and re-rendered without torch.
"""
