"""Glue for running the same adapter files under KubeEdge Ianvs/Sedna and under ``cepr run``."""

from cepr.compat.class_factory import ClassFactory, ClassType, get_class_factory, sedna_available

__all__ = ["ORACLE_MARKED", "SEDNA_BACKEND", "ClassFactory", "ClassType", "get_class_factory", "metric", "policy",
           "prepare_sedna_env", "sedna_available"]

# The BACKEND_TYPE the adapters pick. Sedna's set_backend imports a framework for TENSORFLOW, KERAS, TORCH and
# MINDSPORE; any other value uses its framework-free BackendBase, which calls ``load(model_url=$model_path)`` and
# ``predict(data, **kwargs)``. The edge runs on ONNX Runtime, so it needs none of those frameworks (no torch).
SEDNA_BACKEND = "ONNX"

# The Oracle policy registered under a name that says what it is: Ianvs prints module names in its leaderboard,
# so naming this in the algorithm YAML marks the upper bound under both runners.
ORACLE_MARKED = "Oracle (upper bound: uses labels)"


def prepare_sedna_env(model_file: str | None = None) -> None:
    """Sedna picks its backend from ``BACKEND_TYPE`` (default TensorFlow, which fails) and needs ``model_path`` to
    name an existing file. Set both unless the user already did: ``BACKEND_TYPE=ONNX`` (:data:`SEDNA_BACKEND`), so
    that no torch is needed, and silence Sedna's warning that it does not know that value."""
    import os
    import warnings

    os.environ.setdefault("BACKEND_TYPE", SEDNA_BACKEND)
    warnings.filterwarnings("ignore", message=f"{SEDNA_BACKEND} Not Support yet, use itself")
    if model_file and not os.path.isfile(os.environ.get("model_path", "")):
        os.environ["model_path"] = str(model_file)


def policy(name: str, **capabilities):
    """Decorator for a dispatch policy in one file: registered with cepr (``cepr.dispatch.POLICY_REGISTRY``, with
    its capabilities) and, as a hard-example-mining filter, with the ClassFactory that Ianvs and ``cepr run`` read,
    so the file itself can be the HEM module's ``url`` (docs/architecture.md)."""
    def decorator(cls):
        from cepr.compat.class_factory import force_register
        from cepr.dispatch import register_policy

        register_policy(name, **capabilities)(cls)
        force_register(cls, ClassType.HEM, name)
        return cls
    return decorator


def metric(name: str):
    """Decorator for a testenv metric in one file, ``metric(y_true, y_pred) -> float``: registered with cepr
    (``cepr.metrics.joint.METRIC_REGISTRY``) and with the ClassFactory under its name, so the file itself can be
    the metric's ``url`` in testenv.yaml under both runners."""
    def decorator(fn):
        from cepr.metrics.joint import register_metric

        register_metric(name)(fn)
        factory, types = get_class_factory()
        factory.register(types.GENERAL, alias=name)(fn)
        return fn
    return decorator
