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

from cepr.runner.fingerprint import dataset_identity


def _identities(y_true) -> list[dict]:
    seen, out = set(), []
    for y in list(y_true):
        d = dataset_identity(str(y))
        key = (d["name"], d["synthetic"])
        if key not in seen:
            seen.add(key)
            out.append(d)
        if len(out) > 1:
            break
    return out


def dataset(y_true, y_pred) -> str:
    """The data set's name ('a+b' if the labels come from more than one; '' for no samples)."""
    return "+".join(d["name"] for d in _identities(y_true))


def synthetic(y_true, y_pred) -> float:
    """1.0 when the data set is synthetic (its manifest says so), 0.0 when not, NaN for no samples."""
    ids = _identities(y_true)
    if not ids:
        return math.nan
    return 1.0 if all(d["synthetic"] for d in ids) else 0.0
