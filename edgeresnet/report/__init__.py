"""Report schema (rows) and rendering (terminal, markdown)."""

from .render import kernel_line, markdown, terminal_table, tuning_summary
from .schema import Report, ResultRow

__all__ = ["Report", "ResultRow", "kernel_line", "markdown", "terminal_table", "tuning_summary"]
