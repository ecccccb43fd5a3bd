"""Worked example (docs/architecture.md): a dispatch policy in one file.

Margin: send a sample to the cloud when the edge's top answer is not ahead of the runner-up by at least
``margin`` in the edge's answer distribution. Name this file as the HEM module's ``url`` in an algorithm YAML
(``name: Margin``); it works under ``cepr run`` and ``ianvs -f`` alike.
"""

from cepr.dispatch import Policy, policy
from cepr.errors import CeprError


@policy("Margin", needs_edge_result=True)  # reads the edge result: the runner checks the mining mode for it
class Margin(Policy):
    name = "Margin"

    def __init__(self, margin=0.3, **kwargs):
        if kwargs:
            raise CeprError(f"Margin: unknown hyperparameters {sorted(kwargs)} (it takes margin)")
        self.margin = float(margin)
        if not 0.0 <= self.margin <= 1.0:
            raise CeprError(f"Margin: margin must be in [0, 1], got {margin!r}")

    def hyperparameters(self) -> dict:
        return {"margin": self.margin}

    def __call__(self, x=None) -> bool:
        probs = sorted((x or {}).get("distribution", {}).values(), reverse=True)
        if len(probs) < 2:
            return False  # nothing to compare: keep the edge answer
        return probs[0] - probs[1] < self.margin
