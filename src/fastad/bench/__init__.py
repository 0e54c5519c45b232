"""``fastad bench``: every synthesis method and the references on the same teacher, prior, student and budget."""

from fastad.bench.runner import COMPARISONS, METHODS, BenchSpec, format_table, run_bench

__all__ = ["COMPARISONS", "METHODS", "BenchSpec", "format_table", "run_bench"]
