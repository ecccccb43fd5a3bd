"""Benchmarks that print figures and ratios (not timed unit tests: these machines are shared and noisy)."""
