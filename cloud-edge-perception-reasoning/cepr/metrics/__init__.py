"""Metrics: arithmetic over the records (numpy only)."""

from cepr.compat import get_class_factory
from cepr.metrics import reasons as _reasons  # noqa: F401 - registers the reason_* metrics
from cepr.metrics.joint import register_metric


def metric(name: str):
    """Decorator for a testenv metric in one file, ``metric(y_true, y_pred) -> float``: registered with cepr
    (``cepr.metrics.joint.METRIC_REGISTRY``) and with the ClassFactory under its name, so the file itself can be
    the metric's ``url`` in testenv.yaml under both runners."""
    def decorator(fn):
        register_metric(name)(fn)
        factory, types = get_class_factory()
        factory.register(types.GENERAL, alias=name)(fn)
        return fn
    return decorator
