"""Reports across runs, read from their run folders (``results.json``): ``mafl report`` (report.py), its plots
(plots.py), the aggregation of seeds and the grouping of runs by model, method and dataset (aggregate.py, methods
in their registered order, the paper's), and paired comparisons (paired.py, ``mafl report --compare``).

This package is the layer above the methods (it reads their registry for the order of rows); what a run itself
writes and prints, below the methods, is ``results.json`` (mafl/metrics/results.py), the console summary
(mafl/summary.py) and one cell's format (mafl/metrics/cells.py), which these reports share.
"""
