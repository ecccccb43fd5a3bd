"""Which data set a leaderboard row was measured on: ``dataset`` (its name) and ``synthetic`` (1.0 / 0.0).

Registered as testenv metrics so that both runners write them into every rank row (Ianvs takes rank columns only
from metrics and module hyperparameters). Both read only ``y_true`` (the label paths Ianvs hands every metric):
the name is ``<root>/<resolution>`` in the Cloud-Robotics layout (e.g. ``cloud-robotics-synth-bench/640x480``),
and a set is synthetic when its ``dataset.json`` manifest says so (the synthetic generator writes one).

``dataset`` returns a string: Ianvs puts metric values into its rank DataFrame as they are (no formatting), so a
string cell is written to the CSVs and printed; it must not be used in ``sort_by``. ``synthetic`` is a number, so
it can be sorted or filtered like any metric.
"""

from __future__ import annotations

import math
import warnings

from cepr.data.identity import dataset_identity
from cepr.errors import CeprError


def _identities(y_true, y_pred) -> list[dict]:
    """The distinct (name, synthetic) of the label paths, in order (stops at the second); [] with a warning for
    no samples. Checked like every metric: y_true and y_pred pair up one to one."""
    labels = [] if y_true is None else list(y_true)
    n_pred = 0 if y_pred is None else len(y_pred)
    if len(labels) != n_pred:
        raise CeprError(f"y_true has {len(labels)} entries but y_pred has {n_pred}: they must pair up one to one")
    if not labels:
        warnings.warn("no samples: returning NaN", RuntimeWarning, stacklevel=3)
        return []
    seen, out = set(), []
    for y in labels:
        d = dataset_identity(str(y))
        key = (d["name"], d["synthetic"])
        if key not in seen:
            seen.add(key)
            out.append(d)
        if len(out) > 1:
            break
    return out


def dataset(y_true, y_pred) -> str | float:
    """The data set's name ('a+b' if the labels come from more than one); NaN (an empty cell) for no samples."""
    ids = _identities(y_true, y_pred)
    return "+".join(d["name"] for d in ids) if ids else math.nan


def synthetic(y_true, y_pred) -> float:
    """1.0 when the data set is synthetic (its manifest says so), 0.0 when not, NaN for no samples."""
    ids = _identities(y_true, y_pred)
    if not ids:
        return math.nan
    return 1.0 if all(d["synthetic"] for d in ids) else 0.0
