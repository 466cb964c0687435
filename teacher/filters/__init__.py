"""Teacher-output filters: each a small unit (name, config, keep/drop with a reason), run in order.

Entry point: run_filters(cfg: FilterConfig, rd: RunDir) -> counts.
"""
from teacher.filters.base import Filter, Verdict
from teacher.filters.pipeline import apply_filters, build_filters, run_filters

__all__ = ["Filter", "Verdict", "apply_filters", "build_filters", "run_filters"]
