"""Risk from the book: pure polars code over the lake's position rows (no IB, no Dagster)."""
