"""AdaptivePayload: what a hard sample sends, chosen by the risk of its scene.

**Reads** the edge scene summary's ``risk`` (``SceneSummary.to_dict()["risk"]``, in [0, 1]: the max over objects
of ``w * exp(-d / s)``, people and vehicles near the robot's path weighing most; see
:func:`cepr.edge.summary.risk_score`), nothing else. A summary without a numeric ``risk`` is an error on that
sample.

The rules are tried in order; the first whose ``risk_below`` is above the sample's risk (or that has none) picks
the payload. What a rule leaves unset (``resolution``, ``scale``, ``codec``, ``quality``) comes from the cloud
module's own payload settings. The default table:

==================  ===============================================
risk                payload
==================  ===============================================
< 0.3               the scene summary only
0.3 to < 0.7        summary + the frame at 320x240, JPEG quality 60
>= 0.7              summary + the frame at 640x480, JPEG quality 85
==================  ===============================================

In YAML (the cloud module's hyperparameters)::

    - payload_policy:
        values:
          - AdaptivePayload
          - {name: AdaptivePayload, rules: [{risk_below: 0.5, mode: summary},
                                            {mode: summary+image, resolution: 640x480, quality: 85}]}
"""

from __future__ import annotations

import itertools
import math

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cepr.dispatch.payload_policy import PayloadChoice, PayloadPolicy, derive, register_payload_policy
from cepr.errors import CeprError
from cepr.records import PayloadConfig


class PayloadRule(BaseModel):
    """One row of the table: samples whose risk is below ``risk_below`` (every sample when it is None) send
    ``mode`` at ``resolution``/``scale``, ``codec``, ``quality`` (unset: the cloud module's setting)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    risk_below: float | None = Field(None, gt=0, le=1.0001)
    mode: str
    resolution: str | None = None
    scale: float | None = Field(None, gt=0, le=4)
    codec: str | None = None
    quality: int | None = Field(None, ge=1, le=100)

    @field_validator("mode", "codec", "resolution")
    @classmethod
    def _valid(cls, v, info):
        if v is not None:  # PayloadConfig's own checks, with its messages

            PayloadConfig(**{info.field_name: v})
        return v

    def label(self) -> str:
        what = [self.mode] + [f"{k} {v}" for k, v in (("resolution", self.resolution), ("scale", self.scale),
                                                      ("codec", self.codec), ("quality", self.quality)) if v]
        return ", ".join(what)


DEFAULT_RULES = (
    PayloadRule(risk_below=0.3, mode="summary"),
    PayloadRule(risk_below=0.7, mode="summary+image", resolution="320x240", quality=60),
    PayloadRule(mode="summary+image", resolution="640x480", quality=85),
)


@register_payload_policy("AdaptivePayload", aliases=("adaptive",))
class AdaptivePayload(PayloadPolicy):
    """Per sample, the first rule whose ``risk_below`` exceeds the scene's risk picks the payload."""

    name = "AdaptivePayload"

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)

        rules: tuple[PayloadRule, ...] = DEFAULT_RULES

        @model_validator(mode="after")
        def _table(self):
            if not self.rules:
                raise ValueError("rules is empty: give at least one rule")
            bounds = [r.risk_below for r in self.rules]
            if bounds[-1] is not None:
                raise ValueError("the last rule must have no risk_below, so that every risk finds a rule")
            if any(b is None for b in bounds[:-1]):
                raise ValueError("only the last rule may leave out risk_below (the rules after it would never apply)")
            if any(a >= b for a, b in itertools.pairwise(bounds[:-1])):
                raise ValueError(f"risk_below must increase from rule to rule, got {bounds[:-1]}")
            return self

    def rule_for(self, risk: float) -> PayloadRule:
        return next(r for r in self.cfg.rules if r.risk_below is None or risk < r.risk_below)

    def choose(self, summary: dict, choice: PayloadChoice) -> PayloadChoice:
        risk = summary.get("risk") if isinstance(summary, dict) else None
        if isinstance(risk, bool) or not isinstance(risk, (int, float)) or not math.isfinite(risk):
            raise CeprError(f"AdaptivePayload reads the scene summary's risk, but it is {risk!r}")
        rule = self.rule_for(float(risk))
        payload = derive(choice.payload, mode=rule.mode, resolution=rule.resolution, scale=rule.scale,
                         codec=rule.codec, quality=rule.quality)
        bound = f"risk {risk:g} < {rule.risk_below:g}" if rule.risk_below is not None else f"risk {risk:g}"
        return PayloadChoice(payload, f"AdaptivePayload: {bound}: {rule.label()}", choice.privacy_redacted,
                             choice.notes)

    def possible(self, base) -> list:
        return [derive(base, mode=r.mode, resolution=r.resolution, scale=r.scale, codec=r.codec, quality=r.quality)
                for r in self.cfg.rules]
