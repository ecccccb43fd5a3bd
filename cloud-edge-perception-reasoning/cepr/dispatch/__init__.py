"""Dispatch policies (hard-example-mining filters): which samples go to the cloud.

:data:`POLICY_REGISTRY` holds every policy by name (Sedna/Ianvs names and aliases) with its capabilities; a new one
is one file with ``@register_policy("Name", needs_edge_result=True)`` on its class (or an entry point in the group
``cepr.policies`` of another package). ``POLICIES`` is a read-only mapping view of it and ``create_policy(name,
**hyperparameters)`` builds one from YAML-style values. Import-light: stdlib + numpy only.
"""

from __future__ import annotations

# importing registers them: the baselines (policies.py) and the policies that read the edge features
from cepr.compat.class_factory import ClassType, force_register
from cepr.dispatch.budget import Budget
from cepr.dispatch.complexity import Complexity
from cepr.dispatch.learned import Learned, train_learned
from cepr.dispatch.network_aware import NetworkAware
from cepr.dispatch.policies import (
    POLICY_REGISTRY,
    CloudOnly,
    CrossEntropy,
    EdgeOnly,
    Oracle,
    OracleRouter,
    Policy,
    Random,
    RandomRouter,
    Threshold,
    register_policy,
)
from cepr.dispatch.risk_aware import RiskAware

POLICIES = POLICY_REGISTRY.view()


def policy(name: str, **capabilities):
    """Decorator for a dispatch policy in one file: registered with cepr (:data:`POLICY_REGISTRY`, with its
    capabilities) and, as a hard-example-mining filter, with the ClassFactory that Ianvs and ``cepr run`` read,
    so the file itself can be the HEM module's ``url`` (docs/architecture.md)."""
    def decorator(cls):
        register_policy(name, **capabilities)(cls)
        force_register(cls, ClassType.HEM, name)
        return cls
    return decorator


def get_policy(name: str) -> type:
    """The policy class registered as ``name``; a typo gets a "did you mean" and the list of names."""
    return POLICY_REGISTRY.get(name)


def create_policy(name: str, **hyperparameters) -> Policy:
    """``get_policy(name)(**hyperparameters)``; values may be strings, as YAML sometimes gives them."""
    return get_policy(name)(**hyperparameters)


__all__ = ["POLICIES", "POLICY_REGISTRY", "Budget", "CloudOnly", "Complexity", "CrossEntropy", "EdgeOnly", "Learned",
           "NetworkAware", "Oracle", "OracleRouter", "Policy", "Random", "RandomRouter", "RiskAware", "Threshold",
           "create_policy", "get_policy", "policy", "register_policy", "train_learned"]
