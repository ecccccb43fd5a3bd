"""Checks for module hyperparameters as YAML hands them over (a flag may arrive as a string), shared by the
edge and cloud modules and the dataset processor. Import-light: errors only."""

from __future__ import annotations

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
