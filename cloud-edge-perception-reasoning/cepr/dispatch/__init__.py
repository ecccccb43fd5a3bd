"""Dispatch policies (hard-example-mining filters): which samples go to the cloud.

``POLICIES`` maps every accepted name (Sedna/Ianvs names and aliases) to its class; ``create_policy(name,
**hyperparameters)`` builds one from YAML-style values. Import-light: stdlib + numpy only.
"""

from __future__ import annotations

import difflib

from cepr.dispatch.policies import (
    CloudOnly,
    CrossEntropy,
    EdgeOnly,
    Oracle,
    OracleRouter,
    Policy,
    Random,
    RandomRouter,
    Threshold,
)
from cepr.errors import CeprError

POLICIES: dict[str, type] = {cls.name: cls for cls in (
    EdgeOnly, CloudOnly, Random, RandomRouter, Oracle, OracleRouter, CrossEntropy, Threshold)}


def get_policy(name: str) -> type:
    """The policy class registered as ``name``; a typo gets a "did you mean" and the list of names."""
    try:
        return POLICIES[name]
    except (KeyError, TypeError):
        hint = difflib.get_close_matches(str(name), list(POLICIES), n=1)
        if not hint:  # case slips ("oracle") are the common mistake
            lowered = {n.lower(): n for n in POLICIES}
            hint = [lowered[str(name).lower()]] if str(name).lower() in lowered else []
        msg = f"unknown dispatch policy {name!r}"
        if hint:
            msg += f"; did you mean {hint[0]!r}?"
        raise CeprError(f"{msg} (policies: {', '.join(POLICIES)})") from None


def create_policy(name: str, **hyperparameters) -> Policy:
    """``get_policy(name)(**hyperparameters)``; values may be strings, as YAML sometimes gives them."""
    return get_policy(name)(**hyperparameters)


__all__ = ["POLICIES", "CloudOnly", "CrossEntropy", "EdgeOnly", "Oracle", "OracleRouter", "Policy", "Random",
           "RandomRouter", "Threshold", "create_policy", "get_policy"]
