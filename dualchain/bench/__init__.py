"""Benchmarks and experiment scenarios; each prints or writes JSON."""
