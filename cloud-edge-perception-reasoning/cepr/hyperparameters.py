"""Checks for module and policy hyperparameters as YAML hands them over (numbers and flags may arrive as strings),
shared by the edge and cloud modules, the dataset processor and the dispatch policies. Import-light: errors only.
``kind`` names the module or policy in every message."""

from __future__ import annotations

import math

from cepr.errors import CeprError, unknown


def check_known(kind: str, given: dict, allowed) -> None:
    """Every key of ``given`` is one of ``allowed``; else a CeprError naming ``kind`` and the closest known key."""
    for k in given:
        if k not in allowed:
            raise CeprError(f"{kind}: " + unknown("hyperparameter", k, allowed, listing="known", sort=True))


def as_flag(kind: str, name: str, value) -> bool:
    """A YAML boolean; "true"/"false" strings are accepted, anything else is an error (``bool("false")`` is True)."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":  # numpy's bool, without importing numpy
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no"):
        return value.strip().lower() in ("true", "yes")
    raise CeprError(f"{kind}: {name} must be true or false, got {value!r}")


def unit_float(kind: str, param: str, value) -> float:
    """YAML may hand numbers over as strings; anything outside [0, 1] is almost surely a typo (e.g. 50 for 0.5)."""
    if isinstance(value, bool):
        raise CeprError(f"{kind}: {param} must be a number in [0, 1], got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise CeprError(f"{kind}: {param} must be a number in [0, 1], got {value!r}") from None
    if not (0.0 <= v <= 1.0):  # also rejects NaN
        raise CeprError(f"{kind}: {param} must be in [0, 1], got {value!r}")
    return v


def as_int(kind: str, param: str, value) -> int:
    if isinstance(value, bool):
        raise CeprError(f"{kind}: {param} must be an integer, got {value!r}")
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise CeprError(f"{kind}: {param} must be an integer, got {value!r}") from None
    if not math.isfinite(f) or f != int(f):
        raise CeprError(f"{kind}: {param} must be an integer, got {value!r}")
    return int(f)


def positive_float(kind: str, param: str, value, allow_zero: bool = False) -> float:
    """A finite number > 0 (>= 0 with ``allow_zero``)."""
    if isinstance(value, bool):
        raise CeprError(f"{kind}: {param} must be a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise CeprError(f"{kind}: {param} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise CeprError(f"{kind}: {param} must be a finite number {'>=' if allow_zero else '>'} 0, got {value!r}")
    return v


def positive_int(kind: str, param: str, value) -> int:
    v = as_int(kind, param, value)
    if v < 1:
        raise CeprError(f"{kind}: {param} must be an integer >= 1, got {value!r}")
    return v
