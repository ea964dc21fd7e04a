"""djtasks' own tasks, found by autodiscovery like any app's: the housekeeping
that beat runs (djtasks/beat/housekeeping.py)."""

from .beat.housekeeping import cleanup_results, trim_dead_letters, trim_workers

__all__ = ["cleanup_results", "trim_dead_letters", "trim_workers"]
