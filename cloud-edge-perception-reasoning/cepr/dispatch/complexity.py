"""Complexity: the scene-complexity score of KubeEdge Ianvs's Cloud-Robotics perception example, as a router."""

from __future__ import annotations

from cepr.dispatch.policies import Policy, check_kwargs, register_policy
from cepr.edge.features import feature
from cepr.errors import CeprError
from cepr.hyperparameters import positive_float, unit_float

# Ianvs (examples/Cloud_Robotics/cloud-edge-collaborative-inference_bench/perception-reasoning): weights of the
# object count, edge density and fragmentation, and the values at which each term saturates
DEFAULT_WEIGHTS = (0.4, 0.4, 0.2)
DEFAULT_SCALES = (15.0, 0.5, 20.0)


def _triple(policy: str, param: str, value, default) -> tuple[float, float, float]:
    if value is None:
        return default
    if isinstance(value, str):
        value = [v for v in value.replace(",", " ").split() if v]
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise CeprError(f"{policy}: {param} must be a list of 3 numbers (object count, edge density, "
                        f"fragmentation), got {value!r}")
    return tuple(positive_float(policy, f"{param}[{i}]", v, allow_zero=param == "weights")
                 for i, v in enumerate(value))


@register_policy("Complexity", needs_edge_result=True)
class Complexity(Policy):
    """Hard (cloud) when the predicted mask looks complex: ``score > threshold``, with

        score = w1 * min(features.mask_classes / s1, 1) + w2 * min(features.edge_density / s2, 1)
                + w3 * min(features.fragments / s3, 1)

    Reads from the edge result: ``features.mask_classes`` (classes in the predicted mask other than road: the
    "object count"), ``features.edge_density`` (share of mask pixels, at 160 px wide, with another class in their
    3x3 neighbourhood) and ``features.fragments`` (8-connected components of every class but road, summed); see
    ``cepr.edge.features``. These are the three terms, weights (0.4, 0.4, 0.2) and scales (15, 0.5, 20) of
    the complexity score in KubeEdge Ianvs's Cloud-Robotics perception example (its dispatcher calls a frame
    "high" above 0.7 and "medium" above 0.4). Nothing else is read: not the confidence, not the task.

    Parameters: ``threshold`` (0.7, Ianvs's "high"), ``weights`` ([0.4, 0.4, 0.2]), ``scales`` ([15, 0.5, 20])."""

    name = "Complexity"
    order_independent = True  # decides from the sample alone: `cepr run --cluster` may split its cases

    def __init__(self, threshold=0.7, weights=None, scales=None, **kwargs):
        check_kwargs(self.name, kwargs, ("threshold", "weights", "scales"))
        self.threshold = unit_float(self.name, "threshold", threshold)
        self.weights = _triple(self.name, "weights", weights, DEFAULT_WEIGHTS)
        self.scales = _triple(self.name, "scales", scales, DEFAULT_SCALES)

    def hyperparameters(self) -> dict:
        return {"threshold": self.threshold, "weights": list(self.weights), "scales": list(self.scales)}

    def score(self, x) -> float:
        """The complexity score of an edge result."""
        terms = (feature(x, "mask_classes", self.name), feature(x, "edge_density", self.name),
                 feature(x, "fragments", self.name))
        for name, v in zip(("mask_classes", "edge_density", "fragments"), terms):
            if v < 0:
                raise CeprError(f"{self.name}: the edge result's features.{name} must be >= 0, got {v}")
        return sum(w * min(v / s, 1.0) for w, v, s in zip(self.weights, terms, self.scales))

    def __call__(self, x=None) -> bool:
        return self.score(x) > self.threshold
