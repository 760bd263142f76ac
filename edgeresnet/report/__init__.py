"""Report schema (rows), one row renderer (table), the renderings (terminal, markdown, HTML)
and their one writer (publish)."""

from .render import bench_table, kernel_line, markdown, terminal_table, tuning_summary
from .schema import Report, ResultRow

__all__ = ["Report", "ResultRow", "bench_table", "kernel_line", "markdown", "terminal_table", "tuning_summary"]
