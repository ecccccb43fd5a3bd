"""Checks for policy hyperparameters as YAML hands them over (numbers may arrive as strings). Import-light."""

from __future__ import annotations

import math

from cepr.dispatch.policies import _as_int, _as_unit_float, _check_kwargs
from cepr.errors import CeprError

check_kwargs = _check_kwargs
unit_float = _as_unit_float
as_int = _as_int


def positive_float(policy: str, param: str, value, allow_zero: bool = False) -> float:
    """A finite number > 0 (>= 0 with ``allow_zero``)."""
    if isinstance(value, bool):
        raise CeprError(f"{policy}: {param} must be a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise CeprError(f"{policy}: {param} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise CeprError(f"{policy}: {param} must be a finite number {'>=' if allow_zero else '>'} 0, got {value!r}")
    return v


def positive_int(policy: str, param: str, value) -> int:
    v = as_int(policy, param, value)
    if v < 1:
        raise CeprError(f"{policy}: {param} must be an integer >= 1, got {value!r}")
    return v
