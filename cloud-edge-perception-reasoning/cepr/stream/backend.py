"""The cloud backend (and any module's settings) from the same YAML as a benchmark job.

API::

    module_hyperparameters(path, module_type="cloudmodel", algorithm=None) -> dict
    cloud_module_from_yaml(path, algorithm=None, overrides=None) -> cepr.cloud.module.CloudModule

``path``: a benchmarkingjob YAML (``algorithm`` names one of its algorithms; default: the first with a cloud
module that is not edge-only) or an algorithm YAML. Hyperparameters are read as ``cepr run`` reads them
(``other_hyperparameters`` files included); where a hyperparameter lists several values (a sweep), the first is
taken and a warning says so. ``CloudModule(**hyperparameters)`` then checks and builds the backend exactly as in a
benchmark (``base_url: auto`` starts the reference expert server; ``cleanup()`` closes it); its ``client``
(``infer(CloudRequest) -> CloudResult``, the link model included) is what a :class:`CloudWorker` calls.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cepr.errors import CeprError

log = logging.getLogger(__name__)


def _algorithm(path: Path, algorithm: str | None):
    from cepr.runner.config import load_yaml, parse_algorithm

    doc = load_yaml(path, "job or algorithm file")
    if "benchmarkingjob" in doc:
        # the job's algorithms only: its testenv's data set need not exist here (the frames come from elsewhere)
        from cepr.runner.config import JobDoc, load_doc, resolve_path

        b = load_doc(path, JobDoc, "benchmarking job file").benchmarkingjob
        algorithms = [parse_algorithm(x.name, resolve_path(x.url, path, f"algorithm {x.name!r} url"))
                      for x in b.test_object.algorithms]
        if algorithm is not None:
            for a in algorithms:
                if a.name == algorithm:
                    return a
            from cepr.errors import did_you_mean

            names = [a.name for a in algorithms]
            raise CeprError(f"{path}: no algorithm {algorithm!r}{did_you_mean(algorithm, names)} "
                            f"(algorithms: {', '.join(names)})")
        for a in algorithms:
            hem = next((m for m in a.modules if m[0] == "hard_example_mining"), None)
            if hem is not None and hem[1] != "EdgeOnly" and any(m[0] == "cloudmodel" for m in a.modules):
                return a
        raise CeprError(f"{path}: no algorithm of this job sends anything to the cloud")
    if "algorithm" in doc:
        if algorithm is not None:
            log.warning("%s is an algorithm file: --algorithm %s ignored", path, algorithm)
        return parse_algorithm(path.stem, path)
    raise CeprError(f"{path}: neither a benchmarkingjob nor an algorithm file (top-level keys: {sorted(doc)})")


def module_hyperparameters(path, module_type: str = "cloudmodel", algorithm: str | None = None) -> dict:
    """One module's hyperparameters (first value of each list) from a job or algorithm YAML."""
    path = Path(path)
    a = _algorithm(path, algorithm)
    for mtype, _name, _url, pairs, base in a.modules:
        if mtype == module_type:
            hps = dict(base)
            for hp, values in pairs:
                if len(values) > 1:
                    log.warning("%s: %s %s lists %d values; the stream uses the first, %r", path, module_type, hp,
                                len(values), values[0])
                hps[hp] = values[0]
            return hps
    raise CeprError(f"{path}: algorithm {a.name!r} has no {module_type} module")


def cloud_module_from_yaml(path, algorithm: str | None = None, overrides: dict | None = None):
    """The job's cloud module, built (servers started) as in a benchmark."""
    from cepr.cloud.module import CloudModule

    hps = {**module_hyperparameters(path, "cloudmodel", algorithm), **(overrides or {})}
    return CloudModule(**hps)
