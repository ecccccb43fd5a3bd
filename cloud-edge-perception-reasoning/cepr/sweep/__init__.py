"""Offline router analysis (``cepr sweep``): run the edge and the cloud once per test sample, cache both results,
then evaluate any number of dispatch-policy settings from the cache without calling a model.

* :mod:`cepr.sweep.cache`: filling and reading the cache (keyed by model hashes and payload settings);
* :mod:`cepr.sweep.spec`: the sweep spec (policies and parameter grids, YAML);
* :mod:`cepr.sweep.evaluate`: decisions (vectorised or the policy called per sample) and per-setting metrics;
* :mod:`cepr.sweep.curves`: call-performance curves, APGR and CPT as RouteLLM defines them, Random and Oracle
  references, the Pareto front;
* :mod:`cepr.sweep.report`: sweep.json / settings.csv / curves.csv, tables, algorithm YAML written back.

docs/sweep.md has the commands and the definitions. Import-light: numpy and pydantic only until a cache is filled.
"""
