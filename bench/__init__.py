"""bench: side-by-side benchmarks, tables and plots."""
