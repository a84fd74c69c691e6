"""Benchmarks: `relance bench [--quick] [--json]` (or `make bench`). Never part of `make test`,
except a small smoke run of this code (tests/test_bench.py)."""
