"""Leaderboards (Ianvs rank CSVs, printed tables)."""
