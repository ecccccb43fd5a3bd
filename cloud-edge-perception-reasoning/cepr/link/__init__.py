"""The edge-to-cloud network link: transfer time from real byte counts, deterministic for a seed."""

from cepr.link.network import PRESETS, Link, LinkConfig, Transfer

__all__ = ["PRESETS", "Link", "LinkConfig", "Transfer"]
