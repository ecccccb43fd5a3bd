"""Metrics (numpy only)."""
