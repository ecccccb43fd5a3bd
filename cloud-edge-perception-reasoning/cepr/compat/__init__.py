"""Glue for running the same adapter files under KubeEdge Ianvs/Sedna and under ``cepr run``."""

from cepr.compat.class_factory import ClassFactory, ClassType, get_class_factory, sedna_available

__all__ = ["ClassFactory", "ClassType", "get_class_factory", "prepare_sedna_env", "sedna_available"]


def prepare_sedna_env(model_file: str | None = None) -> None:
    """Sedna reads ``BACKEND_TYPE`` at import (default TensorFlow, which fails) and needs ``model_path`` to name
    an existing file. Set both unless the user already did."""
    import os

    os.environ.setdefault("BACKEND_TYPE", "TORCH")
    if model_file and not os.path.isfile(os.environ.get("model_path", "")):
        os.environ["model_path"] = str(model_file)
