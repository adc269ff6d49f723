"""Inputs: prompt and SFT loaders, benchmark layouts and the benchmark task list."""
