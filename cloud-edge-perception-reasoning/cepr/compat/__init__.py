"""Glue for running the same adapter files under KubeEdge Ianvs/Sedna and under ``cepr run``."""

import os
import warnings

from cepr.compat.class_factory import ClassFactory, ClassType, get_class_factory, sedna_available

__all__ = ["ORACLE_MARKED", "SEDNA_BACKEND", "ClassFactory", "ClassType", "get_class_factory", "prepare_sedna_env",
           "sedna_available"]

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
    os.environ.setdefault("BACKEND_TYPE", SEDNA_BACKEND)
    warnings.filterwarnings("ignore", message=f"{SEDNA_BACKEND} Not Support yet, use itself")
    if model_file and not os.path.isfile(os.environ.get("model_path", "")):
        os.environ["model_path"] = str(model_file)


def __getattr__(name: str):
    if name in ("policy", "metric"):  # the plug-in decorators live with what they register
        where = {"policy": "cepr.dispatch", "metric": "cepr.metrics"}[name]
        raise AttributeError(f"cepr.compat.{name} is now {where}.{name}: from {where} import {name}")
    raise AttributeError(f"module 'cepr.compat' has no attribute {name!r}")
