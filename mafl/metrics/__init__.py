"""Measurement: accuracy with error bars, response diversity, and the run's ``results.json``."""
from mafl.metrics.iteration import compute_iteration_metrics
from mafl.metrics.results import Results, load_results, write_results
from mafl.metrics.stats import MetricRecord, bootstrap, mean_stderr

__all__ = [
    "MetricRecord", "Results", "bootstrap", "compute_iteration_metrics", "load_results",
    "mean_stderr", "write_results",
]
