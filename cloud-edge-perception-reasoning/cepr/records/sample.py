"""One sample as the Ianvs modules see it (the dataset processor makes it, the edge and cloud modules read it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cepr.errors import CeprError


class SampleRef(dict):
    """One sample as the modules see it: a dict (JSON-friendly, what HEM filters and records read).
    ``tolist()`` returns itself, because the Sedna build inside Ianvs calls ``data.tolist()`` before handing a
    sample to the cloud."""

    def tolist(self):
        return self


def as_sample(data, default_task: str = "path_hazard") -> SampleRef:
    """Accept a SampleRef, a plain dict, an RGB path (Ianvs without our dataset processor), or a one-element list
    or array of either."""
    if isinstance(data, SampleRef):
        return data
    if isinstance(data, (list, tuple, np.ndarray)) and len(data) >= 1 and not isinstance(data, str):
        if len(data) == 2 and all(isinstance(v, (str, np.str_)) for v in data):
            return SampleRef(key=Path(str(data[0])).stem, rgb=str(data[0]), label=str(data[1]), task=default_task,
                             index=-1)
        return as_sample(data[0], default_task)
    if isinstance(data, dict):
        if "rgb" not in data:
            raise CeprError(f"a sample dict needs an 'rgb' path, got keys {sorted(data)}")
        s = SampleRef(data)
        s.setdefault("key", Path(str(s["rgb"])).stem)
        s.setdefault("label", None)
        s.setdefault("task", default_task)
        s.setdefault("index", -1)
        return s
    if isinstance(data, (str, np.str_, Path)):
        return SampleRef(key=Path(str(data)).stem, rgb=str(data), label=None, task=default_task, index=-1)
    raise CeprError(f"cannot read a sample from {type(data).__name__}: {data!r:.200}")
