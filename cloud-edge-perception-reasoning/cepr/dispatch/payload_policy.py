"""Payload policies: per sample, what a hard sample sends to the cloud (summary only, or with the image, and how).

The dispatch policies (:mod:`cepr.dispatch.policies`) decide *whether* a sample goes to the cloud; a payload policy
decides *what* goes. It runs in the cloud module, on the edge's state of the sample (its scene summary), and picks
a :class:`~cepr.cloud.payload.PayloadConfig` for that one request. The cloud module's fixed payload settings
(``payload``, ``resolution``, ``scale``, ``codec``, ``quality``) are the *base*: what is sent when no policy
changes it, and what a rule leaves unset inherits.

Chosen by the cloud module's ``payload_policy`` hyperparameter:

* ``fixed`` (the default): the base, for every sample;
* a policy's name (``AdaptivePayload``, ``PrivacyAware``), with its default settings;
* a mapping ``{name: AdaptivePayload, rules: [...]}``: a policy with settings (checked; unknown keys refused);
* a list of those: applied in order, each one starting from what the previous chose (``[AdaptivePayload,
  PrivacyAware]``: by risk, then no image where people are near the camera).

A new payload policy is one file: subclass :class:`PayloadPolicy` with a pydantic ``Config`` (extra="forbid")
and ``choose``, and decorate it with ``@register_payload_policy("Name")`` (or declare it in the entry-point group
``cepr.payload_policies``). The built-in ones are registered lazily, so ``import cepr.dispatch`` stays light.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, ValidationError

from cepr.errors import CeprError, unknown
from cepr.records import PayloadConfig
from cepr.registry import Registry

PAYLOAD_POLICY_REGISTRY: Registry[type] = Registry("payload_policies", "payload policy")
register_payload_policy = PAYLOAD_POLICY_REGISTRY.register
PAYLOAD_POLICY_REGISTRY.add_lazy("AdaptivePayload", "cepr.dispatch.adaptive_payload:AdaptivePayload",
                                 aliases=("adaptive",))
PAYLOAD_POLICY_REGISTRY.add_lazy("PrivacyAware", "cepr.dispatch.privacy_aware:PrivacyAware", aliases=("privacy",))

FIXED = "fixed"


@dataclass
class PayloadChoice:
    """What one request sends: ``payload`` (the settings), ``rule`` (why, in words: which rule of which policy
    chose it), ``privacy_redacted`` (PrivacyAware kept the image on the edge because people were near the camera)."""

    payload: object  # cepr.cloud.payload.PayloadConfig
    rule: str = "fixed"
    privacy_redacted: bool = False
    notes: list[str] = field(default_factory=list)


class PayloadPolicy:
    """``choose(summary, choice) -> PayloadChoice``: ``summary`` is the edge's scene summary of the sample
    (``SceneSummary.to_dict()``, what the cloud module holds as ``EdgeState.summary``), ``choice`` what the
    previous policy of the chain chose (the base settings for the first). ``possible(base)`` lists every payload
    it can return, so the cloud module checks them against its backend before the first sample."""

    name = ""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)

    def __init__(self, **settings):
        self.cfg = _validated(self.name or type(self).__name__, self.Config, settings)

    def choose(self, summary: dict, choice: PayloadChoice) -> PayloadChoice:  # pragma: no cover - overridden
        raise NotImplementedError

    def possible(self, base) -> list:
        return [base]

    def describe(self) -> dict:
        return {"name": self.name, **self.cfg.model_dump(mode="json")}


def _validated(where: str, model: type[BaseModel], settings: dict) -> BaseModel:
    """``model(**settings)`` with a "did you mean" for an unknown key and the field named for a bad value."""
    for k in settings:
        if k not in model.model_fields:
            raise CeprError(f"{where}: " + unknown("setting", k, model.model_fields, listing="known"))
    try:
        return model(**settings)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise CeprError(f"{where}: {loc + ': ' if loc else ''}{err['msg']} (got {err.get('input')!r:.120})") from None


def _one(spec) -> PayloadPolicy | None:
    if isinstance(spec, str):
        name, settings = spec, {}
    elif isinstance(spec, dict):
        if "name" not in spec:
            raise CeprError(f"payload_policy: a mapping names its policy with `name`, got keys {sorted(spec)}")
        settings = {k: v for k, v in spec.items() if k != "name"}
        name = spec["name"]
    else:
        raise CeprError(f"payload_policy: expected a policy name, a mapping with `name`, or a list of those; got "
                        f"{type(spec).__name__} {spec!r:.80}")
    if name in (FIXED, "none", None):
        if settings:
            raise CeprError(f"payload_policy: fixed takes no settings, got {sorted(settings)}")
        return None
    try:
        cls = PAYLOAD_POLICY_REGISTRY.get(str(name))
    except CeprError as e:
        raise CeprError(f"payload_policy: {e} (or {FIXED!r}, the cloud module's payload settings for every "
                        "sample)") from None
    return cls(**settings)


class PayloadPolicyChain:
    """The cloud module's payload policies, applied in order to its base payload settings."""

    def __init__(self, spec=None, base=None):
        self.base = base if base is not None else PayloadConfig()
        specs = spec if isinstance(spec, (list, tuple)) else [spec]
        self.policies = [p for p in (_one(s) for s in specs if s is not None) if p is not None]

    @property
    def fixed(self) -> bool:
        return not self.policies

    def names(self) -> list[str]:
        return [p.name for p in self.policies]

    def describe(self) -> list[dict] | None:
        """What the records keep (None for fixed): every policy with its settings, in order."""
        return [p.describe() for p in self.policies] or None

    def choose(self, summary: dict | None, key: str = "") -> PayloadChoice:
        """The payload of one request. A policy needs the edge's scene summary: with none (the edge did not run,
        as in mining-then-inference), only ``fixed`` can choose."""
        choice = PayloadChoice(self.base)
        if self.policies and summary is None:
            raise CeprError(f"payload_policy {', '.join(self.names())} reads the edge's scene summary, but the edge "
                            f"has not run on sample {key!r} (mining-then-inference sends hard samples straight to "
                            "the cloud): use hard_example_mining_mode: inference-then-mining in testenv.yaml, or "
                            "payload_policy: fixed")
        for p in self.policies:
            choice = p.choose(summary, choice)
        return choice

    def possible(self) -> list:
        """Every payload the chain can choose (deduplicated), for checks against the backend up front."""
        out = [self.base]
        for p in self.policies:
            out = [q for b in out for q in p.possible(b)]
        seen, uniq = set(), []
        for q in out:
            k = q.model_dump_json()
            if k not in seen:
                seen.add(k)
                uniq.append(q)
        return uniq


def payload_policy(spec=None, base=None) -> PayloadPolicyChain:
    """The chain ``spec`` (the ``payload_policy`` hyperparameter) names, over the ``base`` payload settings."""
    return PayloadPolicyChain(spec, base)


def derive(base, **changes):
    """``base`` (a PayloadConfig) with ``changes`` (None values ignored), validated again."""
    changes = {k: v for k, v in changes.items() if v is not None}
    if "scale" in changes and "resolution" not in changes:  # a size given one way replaces the other way
        changes["resolution"] = None
    elif "resolution" in changes:
        changes["scale"] = None
    return PayloadConfig(**{**base.model_dump(), **changes})


def summary_only(base):
    """``base`` sending the scene summary and no image."""
    return derive(base, mode="summary")
