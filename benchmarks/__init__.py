"""Benchmarks (not tests): run with `python -m benchmarks [NAME ...]` or `nox -s bench`."""
