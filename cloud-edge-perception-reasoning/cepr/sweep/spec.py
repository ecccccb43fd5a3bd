"""The sweep spec: which dispatch policies, with which parameter grids, ``cepr sweep`` evaluates from the cache.

A YAML file (typed, ``extra="forbid"``: a misspelt key is an error naming the file, the place and the closest
key)::

    policies:
      - name: Threshold                      # a registered dispatch policy (cepr.dispatch.POLICY_REGISTRY)
        grid:                                # every combination of these values is one setting
          threshold: {start: 0.05, stop: 0.95, step: 0.05}
      - name: Random
        params: {seed: 0}                    # fixed for every setting of this entry
        grid:
          ratio: [0.1, 0.3, 0.5, 0.7, 0.9]
      - name: Margin                         # a policy in a file of your own, imported first (as a HEM url)
        url: ./docs/examples/cepr_example_margin_policy.py
        grid:
          margin: [0.1, 0.2, 0.3]
    vectorize: true                          # threshold-style policies on arrays (false: call every policy per
                                             # sample, as the paradigm does)

``{start, stop, step}`` is inclusive of ``stop`` (values rounded to 10 decimals). A grid varies like Ianvs's
hyperparameters: nested loops in the order listed, the last fastest. ``label`` names an entry's curve (default:
the policy name; two entries of one policy need different labels).
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cepr.runner.config import doc_error, load_yaml


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RangeDoc(_Doc):
    """``{start, stop, step}``: start, start + step, ... up to and including stop."""

    start: float
    stop: float
    step: float = Field(gt=0)

    def values(self) -> list[float]:
        if self.stop < self.start:
            raise ValueError(f"stop {self.stop} is below start {self.start}")
        n = math.floor((self.stop - self.start) / self.step + 1e-9) + 1
        if n > 100_000:
            raise ValueError(f"{n} values is too many for one parameter")
        return [round(self.start + k * self.step, 10) for k in range(n)]


class PolicyEntry(_Doc):
    name: str
    label: str | None = None
    url: str | None = None  # a module file that registers the policy (imported as Ianvs imports a HEM url)
    params: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any] | RangeDoc] = Field(default_factory=dict)

    @field_validator("grid")
    @classmethod
    def _non_empty(cls, v):
        for k, vals in v.items():
            if isinstance(vals, list) and not vals:
                raise ValueError(f"grid {k!r} lists no values")
        return v

    @model_validator(mode="after")
    def _disjoint(self):
        both = sorted(set(self.params) & set(self.grid))
        if both:
            raise ValueError(f"{', '.join(both)} is both in params and in grid: keep one")
        return self

    @property
    def curve(self) -> str:
        return self.label or self.name

    def settings(self) -> list[dict]:
        """Every combination of the grid over the fixed params, in Ianvs's order."""
        names = list(self.grid)
        lists = [v.values() if isinstance(v, RangeDoc) else list(v) for v in self.grid.values()]
        return [{**self.params, **dict(zip(names, combo))} for combo in itertools.product(*lists)]


class SweepSpec(_Doc):
    policies: list[PolicyEntry] = Field(min_length=1)
    vectorize: bool = True

    @model_validator(mode="after")
    def _unique_labels(self):
        seen: dict[str, int] = {}
        for i, p in enumerate(self.policies):
            if p.curve in seen:
                raise ValueError(f"policies[{seen[p.curve]}] and policies[{i}] both draw the curve {p.curve!r}: "
                                 "give one a `label`")
            seen[p.curve] = i
        return self


def setting_id(curve: str, params: dict) -> str:
    """A setting's id, e.g. ``Threshold(threshold=0.65)``: what ``--pick`` takes and the tables show."""
    def fmt(v):
        return json.dumps(v) if not isinstance(v, (int, float)) or isinstance(v, bool) else f"{v:g}"
    return f"{curve}({','.join(f'{k}={fmt(v)}' for k, v in params.items())})"


# The built-in sweep (no --spec): 50 settings of the stock policies that decide from the edge result.
DEFAULT_SPEC = {
    "policies": [
        {"name": "Threshold", "grid": {"threshold": {"start": 0.05, "stop": 0.95, "step": 0.05}}},
        {"name": "CrossEntropy", "grid": {"threshold_cross_entropy": {"start": 0.05, "stop": 0.95, "step": 0.05}}},
        {"name": "Random", "params": {"seed": 0}, "grid": {"ratio": {"start": 0.1, "stop": 0.9, "step": 0.1}}},
        {"name": "EdgeOnly"}, {"name": "CloudOnly"}, {"name": "Oracle"},
    ],
}


def parse_spec(doc: dict, where: str = "the sweep spec") -> SweepSpec:
    try:
        return SweepSpec.model_validate(doc)
    except ValidationError as e:
        raise doc_error(Path(where), e, SweepSpec) from None


def load_spec(path: str | Path | None) -> SweepSpec:
    """The spec in ``path`` (None: :data:`DEFAULT_SPEC`)."""
    if path is None:
        return parse_spec(DEFAULT_SPEC, "the built-in sweep spec")

    p = Path(path)
    return parse_spec(load_yaml(p, "sweep spec"), str(p))
