"""RiskAware: hazards near the robot's path always go to the cloud; confident, low-risk frames stay on the edge."""

from __future__ import annotations

from cepr.dispatch.policies import Policy, check_kwargs, register_policy
from cepr.edge.features import HAZARD_CLASSES, confidence, feature, features_of
from cepr.errors import CeprError, did_you_mean
from cepr.hyperparameters import positive_float, unit_float


@register_policy("RiskAware", needs_edge_result=True)
class RiskAware(Policy):
    """Hard (cloud) when a hazard class is near the path, the scene is risky, or the edge is unsure.

    Reads from the edge result: ``features.hazards`` (hazard class -> nearest distance in or beside the corridor,
    metres), ``features.risk`` (the scene summary's risk score in [0, 1]) and ``confidence``. Hard iff

    * some class of ``hazard_classes`` has ``features.hazards[class] <= hazard_distance_m``, or
    * ``features.risk >= risk_threshold``, or
    * ``confidence < confidence_threshold``.

    So a frame stays on the edge only when no listed hazard is within ``hazard_distance_m`` of the path, the risk
    is below ``risk_threshold`` and the edge is confident. Parameters: ``hazard_distance_m`` (6.0, the tasks'
    hazard distance), ``risk_threshold`` (0.5; 1.0 turns the risk test off except at risk 1), ``confidence_threshold``
    (0.6; 0 turns the confidence test off), ``hazard_classes`` (``all``: person, rider, car, truck, bus, train,
    motorcycle, bicycle; or a list of those names)."""

    name = "RiskAware"
    order_independent = True  # decides from the sample alone: `cepr run --cluster` may split its cases

    def __init__(self, hazard_distance_m=6.0, risk_threshold=0.5, confidence_threshold=0.6, hazard_classes="all",
                 **kwargs):
        check_kwargs(self.name, kwargs, ("hazard_distance_m", "risk_threshold", "confidence_threshold",
                                         "hazard_classes"))
        self.hazard_distance_m = positive_float(self.name, "hazard_distance_m", hazard_distance_m, allow_zero=True)
        self.risk_threshold = unit_float(self.name, "risk_threshold", risk_threshold)
        self.confidence_threshold = unit_float(self.name, "confidence_threshold", confidence_threshold)
        if hazard_classes in ("all", None):
            hazard_classes = list(HAZARD_CLASSES)
        if isinstance(hazard_classes, str):
            hazard_classes = [c.strip() for c in hazard_classes.split(",") if c.strip()]
        if not isinstance(hazard_classes, (list, tuple)) or not hazard_classes:
            raise CeprError(f"{self.name}: hazard_classes must be 'all' or a non-empty list of "
                            f"{', '.join(HAZARD_CLASSES)}, got {hazard_classes!r}")
        for c in hazard_classes:
            if c not in HAZARD_CLASSES:
                raise CeprError(f"{self.name}: hazard_classes: {c!r} is not a hazard class (the edge reports "
                                f"{', '.join(HAZARD_CLASSES)}){did_you_mean(c, HAZARD_CLASSES)}")
        self.hazard_classes = tuple(hazard_classes)

    def hyperparameters(self) -> dict:
        return {"hazard_distance_m": self.hazard_distance_m, "risk_threshold": self.risk_threshold,
                "confidence_threshold": self.confidence_threshold, "hazard_classes": list(self.hazard_classes)}

    def nearest_hazard(self, x) -> float | None:
        """Metres to the nearest listed hazard class in or beside the path; None when there is none."""
        hz = features_of(x, self.name).get("hazards")
        if not isinstance(hz, dict):
            raise CeprError(f"{self.name} reads the edge result's features.hazards (a dict class -> metres), got "
                            f"{hz!r:.100}")
        ds = []
        for c in self.hazard_classes:
            if c in hz:
                d = hz[c]
                if isinstance(d, bool) or not isinstance(d, (int, float)):
                    raise CeprError(f"{self.name}: features.hazards[{c!r}] must be a number of metres, got {d!r}")
                ds.append(float(d))
        return min(ds) if ds else None

    def __call__(self, x=None) -> bool:
        d = self.nearest_hazard(x)
        if d is not None and d <= self.hazard_distance_m:
            return True
        if feature(x, "risk", self.name) >= self.risk_threshold:
            return True
        return confidence(x, self.name) < self.confidence_threshold
