"""Ianvs testenv metrics for cloud-edge perception & reasoning, each called ``metric(y_true, y_pred)``.

Thin adapter: every metric of ``cepr.metrics.joint.METRICS`` (accuracy, per-task accuracy, safety recall, mIoU,
edge ratio, latency percentiles, throughput, bytes, bandwidth saving, cloud tokens) registered by name.
"""

from cepr.compat import get_class_factory
from cepr.metrics.joint import METRICS

ClassFactory, ClassType = get_class_factory()

for _name, _fn in METRICS.items():
    ClassFactory.register(ClassType.GENERAL, alias=_name)(_fn)
