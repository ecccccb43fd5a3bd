"""cepr: Cloud-Edge Perception & Reasoning.

A benchmark suite for KubeEdge Ianvs, and the pipeline behind it, for robots that split perception
(edge) and reasoning (cloud). ``import cepr`` stays light: heavy back-ends are imported lazily.
"""

__version__ = "0.1.0"

from cepr.errors import CeprError, DatasetError

__all__ = ["CeprError", "DatasetError", "__version__"]
