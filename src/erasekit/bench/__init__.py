"""The ShapeWorld bench: every method x concept on one protocol (`run`), its table (`table`) and report.html
(`report`). Imports go run → report → table, one way."""
from .report import write_report
from .run import DEFAULT_CONCEPTS, DEFAULT_METHODS, PROFILES, VARIANTS, run_bench
from .table import COLUMNS, markdown

__all__ = ["COLUMNS", "DEFAULT_CONCEPTS", "DEFAULT_METHODS", "PROFILES", "VARIANTS", "markdown", "run_bench",
           "write_report"]
