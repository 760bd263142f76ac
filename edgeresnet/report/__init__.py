"""Report schema (rows) and rendering (terminal, markdown)."""

from .render import markdown, terminal_table, tuning_summary
from .schema import Report, ResultRow

__all__ = ["Report", "ResultRow", "markdown", "terminal_table", "tuning_summary"]
