"""Worked example (docs/architecture.md): a testenv metric in one file.

cloud_changed: among the samples both sides answered, the share where the cloud's answer differs from the
edge's; NaN (with a warning) when the cloud answered none. List it in testenv.yaml with this file as its ``url``.
"""

import math
import warnings

from cepr.metrics import metric


@metric("cloud_changed")
def cloud_changed(y_true, y_pred) -> float:
    both = [(edge, cloud) for _, _, edge, cloud in y_pred if edge is not None and cloud is not None
            and cloud.get("status", "ok") == "ok"]
    if not both:
        warnings.warn("cloud_changed: the cloud answered no sample", stacklevel=2)
        return math.nan
    return sum(e.get("answer") != c.get("answer") for e, c in both) / len(both)
