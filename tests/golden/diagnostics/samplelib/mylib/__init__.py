"""A sample library with remotability problems (checked by tests/compiler/test_analysis.py)."""
from . import stats
from ._speedups import fast_sum
from .stats import mean

__all__ = ["fast_sum", "mean", "stats"]
