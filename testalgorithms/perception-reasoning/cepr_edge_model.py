"""Ianvs edge model: cepr's on-board pipeline (INT8 RFNet -> scene summary -> calibrated planner).

Thin adapter: the logic is ``cepr.edge.module.EdgeModule``. Importing this file sets ``BACKEND_TYPE=ONNX``
unless it is set (Sedna defaults to TensorFlow; ONNX gets its framework-free backend, so no torch is needed), and
the edge module sets ``model_path`` to its ONNX file.
"""

from cepr.compat import get_class_factory, prepare_sedna_env

prepare_sedna_env()
ClassFactory, ClassType = get_class_factory()

from cepr.edge.module import EdgeModule


@ClassFactory.register(ClassType.GENERAL, alias="CeprEdgeModel")
class CeprEdgeModel(EdgeModule):
    """Hyperparameters: model, calibration, reasoner, plugins, threads, providers, use_depth, depth_for_distance,
    keep_mask."""
