"""Benchmarks and experiment scenarios, each printing or writing JSON, and the chain demo
(``demo``); started from ``dualchain.cli`` only (import-linter checks it)."""
