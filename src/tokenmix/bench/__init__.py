"""Benchmarks: training runs on tasks (`bench.train`), the results database (`bench.store`), suites and reports.

`train` is reached as `tokenmix.bench.train.train`; re-exporting it here would hide the submodule of the same name.
"""

from tokenmix.bench.config import ModelSettings, RunConfig, TrainingSettings
from tokenmix.bench.store import ResultsStore, run_id

__all__ = ["ModelSettings", "ResultsStore", "RunConfig", "TrainingSettings", "run_id"]
