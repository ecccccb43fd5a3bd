"""The cloud backend (and any module's settings) from the same YAML as a benchmark job.

API::

    module_hyperparameters(path, module_type="cloudmodel", algorithm=None) -> dict
    cloud_module_from_yaml(path, algorithm=None, overrides=None) -> cepr.cloud.module.CloudModule

``path``: a benchmarkingjob YAML (``algorithm`` names one of its algorithms; default: the one
:mod:`cepr.runner.resolve`'s rule picks, as the edge service does) or an algorithm YAML. Hyperparameters are read as ``cepr run`` reads them
(``other_hyperparameters`` files included); where a hyperparameter lists several values (a sweep), the first is
taken and a warning says so. ``CloudModule(**hyperparameters)`` then checks and builds the backend exactly as in a
benchmark (``base_url: auto`` starts the reference expert server; ``cleanup()`` closes it); its ``client``
(``infer(CloudRequest) -> CloudResult``, the link model included) is what a :class:`CloudWorker` calls.
"""

from __future__ import annotations

import logging

from cepr.cloud.module import CloudModule
from cepr.runner.resolve import resolve_algorithm

log = logging.getLogger(__name__)


def module_hyperparameters(path, module_type: str = "cloudmodel", algorithm: str | None = None) -> dict:
    """One module's hyperparameters from a job or algorithm YAML: the algorithm :mod:`cepr.runner.resolve`
    picks, each listed hyperparameter at its first value (a warning says so where several are listed)."""
    r = resolve_algorithm(path, algorithm)
    grid = r.algorithm.module(module_type)
    for hp, values in grid.grid if grid is not None else ():
        if len(values) > 1:
            log.warning("%s: %s %s lists %d values; the stream uses the first, %r", path, module_type, hp,
                        len(values), values[0])
    return r.hyperparameters(module_type)


def cloud_module_from_yaml(path, algorithm: str | None = None, overrides: dict | None = None):
    """The job's cloud module, built (servers started) as in a benchmark."""
    hps = {**module_hyperparameters(path, "cloudmodel", algorithm), **(overrides or {})}
    return CloudModule(**hps)
