"""Benchmarks that print numbers: service vs offline throughput, window cost."""
