"""Speculative decoding for vLLM as configuration: a typed, checked mapping turned into ``--speculative-config``.

Methods (``method`` picks one; each has its own keys, anything else is an error):

- ``ngram``: drafts copied from n-gram matches in the prompt (``num_speculative_tokens``, ``prompt_lookup_max``,
  ``prompt_lookup_min``). Needs no second model.
- ``draft_model``: a smaller model of the same tokenizer proposes ``num_speculative_tokens`` tokens; ``model`` is
  its HF folder and must exist. A mapping with ``model`` and no ``method`` means this one (as in vLLM).
- ``eagle`` / ``eagle3``: EAGLE draft heads trained for the target (``model`` required). Checked and turned into
  vLLM's JSON like the others, but **not run here**: no model with EAGLE heads is installable on this machine, so
  no test or number in this project comes from them.

Acceptance is measured from vLLM's own counters (``cepr.servers.vllm_server.spec_counters``), never estimated.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from cepr.errors import CeprError, did_you_mean

NOT_RUN = "not run here: no model with EAGLE heads is installable"
OFF = ("none", "off", "")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    num_speculative_tokens: int = Field(4, ge=1, le=64, description="draft tokens proposed per step")

    def vllm_config(self) -> dict:
        """The ``--speculative-config`` mapping vLLM reads."""
        return self.model_dump(exclude_none=True)

    def vllm_json(self) -> str:
        return json.dumps(self.vllm_config(), sort_keys=True)

    @property
    def note(self) -> str | None:
        """Why this method has no measured numbers here (None when it runs)."""
        return None


class NgramSpec(_Spec):
    method: Literal["ngram"]
    prompt_lookup_max: int = Field(4, ge=1, description="longest n-gram looked up in the prompt")
    prompt_lookup_min: int | None = Field(None, ge=1, description="shortest n-gram (vLLM's default when unset)")

    @model_validator(mode="after")
    def _min_le_max(self):
        if self.prompt_lookup_min is not None and self.prompt_lookup_min > self.prompt_lookup_max:
            raise ValueError(f"prompt_lookup_min ({self.prompt_lookup_min}) is larger than prompt_lookup_max "
                             f"({self.prompt_lookup_max})")
        return self


class _ModelSpec(_Spec):
    model: str = Field(description="the draft model's (or EAGLE heads') HF folder")

    @model_validator(mode="after")
    def _model_exists(self):
        if not Path(self.model).expanduser().exists():
            raise ValueError(f"model {self.model!r} does not exist (an HF folder on this machine)")
        return self

    def vllm_config(self) -> dict:
        d = super().vllm_config()
        d["model"] = str(Path(self.model).expanduser())
        return d


class DraftModelSpec(_ModelSpec):
    method: Literal["draft_model"]


class EagleSpec(_ModelSpec):
    method: Literal["eagle", "eagle3"]

    @property
    def note(self) -> str | None:
        return NOT_RUN


SpecConfig = Annotated[NgramSpec | DraftModelSpec | EagleSpec, Field(discriminator="method")]
METHODS = ("ngram", "draft_model", "eagle", "eagle3")
_ADAPTER = TypeAdapter(SpecConfig)
_KEYS = {"ngram": NgramSpec, "draft_model": DraftModelSpec, "eagle": EagleSpec, "eagle3": EagleSpec}


def parse_speculative(value, where: str = "speculative") -> NgramSpec | DraftModelSpec | EagleSpec | None:
    """The checked config for a mapping (or its JSON text, or an already parsed config); None for no speculation
    (None, an empty mapping, ``none``/``off``, or ``method: none``). Errors name ``where``, the key and the fix."""
    if value is None or isinstance(value, (NgramSpec, DraftModelSpec, EagleSpec)):
        return value
    if isinstance(value, str):
        if value.strip().lower() in OFF:
            return None
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise CeprError(f"{where}: expected a mapping such as {{method: ngram, num_speculative_tokens: 4}} "
                            f"(or its JSON), got {value!r}") from None
    if not isinstance(value, dict):
        raise CeprError(f"{where}: expected a mapping with a method ({', '.join(METHODS)}), got "
                        f"{type(value).__name__} {value!r}")
    if not value or str(value.get("method", "x")).lower() in OFF:
        return None
    d = dict(value)
    if "method" not in d:
        if "model" not in d:
            raise CeprError(f"{where}: no method; set method to one of {', '.join(METHODS)} "
                            f"(a mapping with only a model means draft_model)")
        d["method"] = "draft_model"
    method = d["method"]
    if method not in METHODS:
        raise CeprError(f"{where}: unknown method {method!r}{did_you_mean(method, METHODS)} "
                        f"(methods: {', '.join(METHODS)})")
    cls = _KEYS[method]
    for k in d:
        if k not in cls.model_fields:
            raise CeprError(f"{where}: unknown key {k!r} for method {method}{did_you_mean(k, cls.model_fields)} "
                            f"(keys: {', '.join(cls.model_fields)})")
    try:
        return _ADAPTER.validate_python(d)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"][1:])  # loc[0] is the union's tag
        if err["type"] == "missing":
            raise CeprError(f"{where}: method {method} needs {loc!r}"
                            + (" (the HF folder of the draft)" if loc == "model" else "")) from None
        msg = err["msg"].removeprefix("Value error, ")
        raise CeprError(f"{where}: {loc + ': ' if loc else ''}{msg}") from None
