"""Benchmark: tasks, competitor optimizers, runner, results store, tuning, report."""
