"""Execution: planning seeds against the store, training groups of seeds in runs, the local and Ray
executors, suites and sweeps, evaluation hooks, sample artifacts."""
