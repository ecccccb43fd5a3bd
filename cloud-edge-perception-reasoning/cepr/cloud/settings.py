"""The cloud module's settings as one typed, nested model, built from the flat hyperparameters a job's YAML holds.

Ianvs hands a module its hyperparameters as flat keys and names the rank columns after them
(``cloudmodel-payload``, ``cloudmodel-server_model``...), so the YAML keeps them flat. ``CloudSettings.from_flat``
groups them into what each one configures, checks them before anything starts, and refuses a key that belongs
to nothing (with a "did you mean") or to another choice (naming its owner):

* ``backend``: the plug-in that answers, with its own config model (``openai``, ``inprocess``, ``vllm``,
  ``transformers`` or another package's). A union discriminated by ``backend`` whose members are the registered
  backends: the name picks the config model from the backend registry, so a plug-in joins it by registering;
* ``server``: what ``base_url: auto`` starts, a pydantic union discriminated by ``server``:
  :class:`ReferenceServer`, :class:`LlamaCppServer` or :class:`VllmServer`, each owning its own ``server_*`` keys;
* ``expert``: the reference expert (served, or in this process with ``backend: inprocess``);
* ``payload`` and ``payload_policy``, ``link``, ``fusion`` and ``metrics_url`` (the counters of a vLLM someone
  else started).

Which flat key feeds which field is each field's alias (``FLAT_KEYS`` lists them): there is no second table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from cepr.cloud.client import backend_config_model
from cepr.dispatch.fusion import DEFAULT_FUSION, FUSION_REGISTRY, get_fusion_rule
from cepr.dispatch.payload_policy import PayloadPolicyChain, payload_policy
from cepr.edge.providers import DEFAULT as DEFAULT_PROVIDERS
from cepr.edge.providers import resolve_providers
from cepr.errors import CeprError, did_you_mean
from cepr.hyperparameters import as_flag, check_known
from cepr.link.network import Link
from cepr.llm.spec_config import SpecConfig, parse_speculative
from cepr.records import PayloadConfig
from cepr.registry import load_plugins
from cepr.servers.autoserve import llamacpp_server, reference_server_url
from cepr.servers.llamacpp_server import LlamaCppServerConfig
from cepr.servers.vllm_server import check_model, vllm_server

WHERE = "cloudmodel"


def _flat(name: str):
    """A field read from the flat key ``name`` (and from its own name, when a model is built directly)."""
    return {"validation_alias": AliasChoices(name), "serialization_alias": name}


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# ---- what base_url: auto starts -------------------------------------------------------------------------------

@dataclass
class Started:
    """A server that ``base_url: auto`` started (shared by the test cases that ask for the same one; the job stops
    it): where it listens, the model id it serves, the backend settings that suit it unless the YAML sets them,
    and what its speculative-decoding counters are read from (vLLM only)."""

    url: str
    model: str
    defaults: dict = field(default_factory=dict)
    counters: Any = None


class ReferenceServer(_Settings):
    """cepr's reference cloud expert behind an OpenAI-compatible API (``cepr serve cloud``): the default. Its
    model, sessions and providers are the ``expert`` settings, shared with ``backend: inprocess``."""

    server: Literal["reference"] = "reference"

    def start(self, settings: CloudSettings) -> Started:
        from cepr.cloud.expert import EXPERT_MODEL_NAME  # brings the openai SDK: only when it is served

        e = settings.expert
        return Started(reference_server_url(e.model, settings.threads, e.sessions, providers=e.providers),
                       EXPERT_MODEL_NAME)


class LlamaCppServer(_Settings):
    """A GGUF model behind llama.cpp's OpenAI-compatible server (``cepr serve llamacpp``)."""

    server: Literal["llamacpp"]
    model: str = Field("gemma3-270m", **_flat("server_model"), description="a shipped name or a GGUF path")
    speculative: str = Field("none", **_flat("server_speculative"))
    draft_tokens: int = Field(10, **_flat("server_draft_tokens"))
    ctx: int = Field(4096, **_flat("server_ctx"))
    mmproj: str | None = Field(None, **_flat("server_mmproj"), description="a vision projector GGUF")

    @field_validator("mmproj", mode="before")
    @classmethod
    def _none(cls, v):
        return None if v in (None, "none") else str(v)

    def engine_config(self, threads: int) -> LlamaCppServerConfig:
        cfg = LlamaCppServerConfig(model=str(self.model), speculative=str(self.speculative),
                                   draft_tokens=int(self.draft_tokens), n_ctx=int(self.ctx), threads=threads,
                                   mmproj=self.mmproj)
        cfg.check()
        return cfg

    def start(self, settings: CloudSettings) -> Started:
        srv = llamacpp_server(self.model, settings.threads, self.speculative, self.draft_tokens, self.ctx,
                              mmproj=self.mmproj)
        # the reply constrained to the answer JSON; without a projector its server drops text given as a list of
        # parts, with one (its multimodal chat handler) parts are how the image travels
        return Started(srv.url, srv.model_id(), {"answer_format": "json_object",
                                                 "content_format": "parts" if self.mmproj else "string"})


class VllmServer(_Settings):
    """A Hugging Face model folder behind vLLM's OpenAI-compatible server (``cepr serve vllm``)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    server: Literal["vllm"]
    model: str = Field(**_flat("server_model"), description="a Hugging Face model folder (or a shipped name)")
    speculative: Any = Field(None, **_flat("server_speculative"))
    max_model_len: int = Field(1024, ge=16, **_flat("server_max_model_len"))
    dtype: str = Field("float32", **_flat("server_dtype"))
    kv_cache_gib: float = Field(1.0, gt=0, **_flat("server_kv_cache_gib"))
    python: str | None = Field(None, **_flat("vllm_python"), description="vLLM's python (looked up at start)")

    @property
    def spec(self) -> SpecConfig | None:
        return parse_speculative(self.speculative, where="cloudmodel: server_speculative")

    def start(self, settings: CloudSettings) -> Started:
        srv = vllm_server(self.model, speculative=self.spec, dtype=self.dtype, max_model_len=self.max_model_len,
                          python=self.python, kv_cache_gib=self.kv_cache_gib)
        # vLLM's structured output: the answer JSON's schema
        return Started(srv.url, srv.model_id(), {"answer_format": "json_schema"}, counters=srv)


class GroundedServer(_Settings):
    """A grounded VLM behind cepr's own OpenAI-compatible service (``cepr serve cloud --vlm``): its encoder on the
    request's image, the decoder on ``engine`` (vLLM: started on loopback for that service, prompt embeddings)."""

    server: Literal["grounded"]
    vlm: str = Field("grounded-cloud", **_flat("server_vlm"), description="a shipped grounded VLM or a folder")
    engine: str = Field("vllm", **_flat("server_vlm_engine"), description="llamacpp, transformers or vllm")
    quant: str = Field("q8_0", **_flat("server_vlm_quant"), description="the GGUF llama.cpp reads")
    python: str | None = Field(None, **_flat("vllm_python"), description="vLLM's python (looked up at start)")

    @field_validator("engine")
    @classmethod
    def _engine(cls, v):
        from cepr.cloud.grounded_engines import ENGINES, one_of

        return one_of(v, ENGINES)

    @field_validator("quant")
    @classmethod
    def _quant(cls, v):
        from cepr.cloud.grounded_engines import QUANTS, one_of

        return one_of(v, QUANTS)

    def start(self, settings: CloudSettings) -> Started:
        from cepr.servers.autoserve import grounded_server_url

        return Started(grounded_server_url(self.vlm, self.engine, self.quant, settings.threads, self.python),
                       self.vlm)


ServerSettings = Annotated[ReferenceServer | LlamaCppServer | VllmServer | GroundedServer,
                           Field(discriminator="server")]
SERVERS: dict[str, type[_Settings]] = {"reference": ReferenceServer, "llamacpp": LlamaCppServer, "vllm": VllmServer,
                                       "grounded": GroundedServer}
_SERVER_ADAPTER = TypeAdapter(ServerSettings)


def _aliases(model: type[BaseModel]) -> dict[str, str]:
    """flat key -> field name, for the fields of ``model`` read from a flat key of another name."""
    out = {}
    for name, f in model.model_fields.items():
        if f.serialization_alias:
            out[f.serialization_alias] = name
    return out


SERVER_KEYS = {name: tuple(_aliases(m)) for name, m in SERVERS.items()}  # the flat keys each server owns


# ---- the rest -------------------------------------------------------------------------------------------------

class ExpertSettings(_Settings):
    """The reference expert, wherever it runs (``base_url: auto`` serves it; ``backend: inprocess`` runs it here)."""

    model: str = Field("cloud", **_flat("expert_model"))
    sessions: int | None = Field(None, **_flat("server_sessions"),
                                 description="model sessions answering at once (None: one per core)")
    providers: Any = Field(DEFAULT_PROVIDERS, **_flat("expert_providers"),
                           description="ONNX Runtime execution provider(s), as the edge module's providers")


class LinkSettings(_Settings):
    preset: Any = Field("4g", **_flat("link"), description="a preset name, a custom mapping, or none")
    seed: int = Field(0, **_flat("link_seed"))
    emulate: bool = Field(True, **_flat("emulate_link"), description="wait the modelled transfer time")

    def build(self) -> Link | None:
        return None if self.preset in (None, "none") else Link(self.preset, seed=self.seed)

    @property
    def name(self) -> str:
        return self.preset if isinstance(self.preset, str) else "custom"


class BackendSettings(_Settings):
    """The backend's name and its own settings, checked by the config model its registry entry declares."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    name: str = "openai"
    options: dict = Field(default_factory=dict)  # the backend's keys as the YAML gives them

    @property
    def auto(self) -> bool:
        """``base_url: auto`` (the default of the openai backend): cepr starts the server."""
        return self.name == "openai" and self.options.get("base_url", "auto") == "auto"


class CloudSettings(_Settings):
    """Everything the cloud module is configured with, nested by what it configures."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    backend: BackendSettings
    server: ServerSettings = ReferenceServer()
    expert: ExpertSettings = ExpertSettings()
    threads: int = Field(1, ge=1, **_flat("server_threads"), description="threads of the engine cepr starts")
    payload: PayloadConfig = PayloadConfig(mode="summary+image")
    payload_policy: Any = None
    link: LinkSettings = LinkSettings()
    fusion: str = DEFAULT_FUSION
    metrics_url: str | None = Field(None, **_flat("server_metrics_url"))
    plugins: Any = None

    @property
    def chain(self) -> PayloadPolicyChain:
        """The payload policy over the fixed payload settings (cepr.dispatch.payload_policy)."""
        return payload_policy(self.payload_policy, self.payload)

    @classmethod
    def from_flat(cls, hps: dict) -> CloudSettings:
        """The nested settings from a job's flat hyperparameters, every check done and nothing started."""
        return _from_flat(dict(hps))


PAYLOAD_KEYS = ("payload", "resolution", "scale", "codec", "quality")  # PayloadConfig's mode and the rest
TOP_KEYS = ("backend", "plugins", "server", "payload_policy", "fusion")
FLAT_KEYS = (set(TOP_KEYS) | set(PAYLOAD_KEYS) | {a for keys in SERVER_KEYS.values() for a in keys}
             | set(_aliases(ExpertSettings)) | set(_aliases(LinkSettings)) | set(_aliases(CloudSettings)))


def _err(what: str, e: Exception) -> CeprError:
    return CeprError(f"{WHERE}: {what}{e}")


def _validation_message(e: ValidationError, tag: str | None = None) -> str:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"] if p != tag)
    return f"{loc}: {err['msg']}" if loc else err["msg"]


def _server(hps: dict, auto: bool) -> ServerSettings:
    """What ``base_url: auto`` starts: ``server`` picks the member of the union, which owns its own keys."""
    name = str(hps.get("server", "reference"))
    if name not in SERVERS:
        raise CeprError(f"{WHERE}: server must be one of {', '.join(SERVERS)}, not {name!r}"
                        f"{did_you_mean(name, SERVERS)}")
    owned = {k for keys in SERVER_KEYS.values() for k in keys}
    foreign = sorted(k for k in owned if k in hps and k not in SERVER_KEYS[name])
    if foreign:
        owners = [n for n, keys in SERVER_KEYS.items() if set(foreign) <= set(keys)]
        raise CeprError(f"{WHERE}: {', '.join(foreign)} only apply to server: {' or '.join(owners) or 'llamacpp'}"
                        + (f" (this one is server: {name})" if "server" in hps else ""))
    if name != "reference" and not auto:
        raise CeprError(f"{WHERE}: server: {name} is what base_url: auto starts (with backend: openai); with a "
                        "base_url of your own, drop it")
    if name == "vllm" and "server_model" not in hps:
        raise CeprError(f"{WHERE}: server: vllm needs server_model (a Hugging Face model folder, e.g. what "
                        "`cepr models tiny --out DIR` writes to DIR/hf)")
    try:
        server = _SERVER_ADAPTER.validate_python({"server": name, **{k: hps[k] for k in SERVER_KEYS[name] if k in hps}})
    except ValidationError as e:
        raise CeprError(f"{WHERE}: server: {name}: {_validation_message(e, name)}") from None
    if isinstance(server, GroundedServer):
        from cepr.edge.models import grounded_path

        try:
            grounded_path(server.vlm)
        except CeprError as e:
            raise _err("server_vlm: ", e) from None
    if isinstance(server, LlamaCppServer):
        try:
            server.engine_config(1)
        except CeprError as e:
            raise _err("", e) from None
    elif isinstance(server, VllmServer):
        server.spec  # noqa: B018 - parsed here so that a bad speculative config fails before any case runs
        server = server.model_copy(update={"model": check_model(server.model)})
    return server


def _expert(hps: dict) -> ExpertSettings:
    v = hps.get("server_sessions")
    if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
        raise CeprError(f"{WHERE}: server_sessions must be an integer >= 1, got {v!r}")
    providers = hps.get("expert_providers", DEFAULT_PROVIDERS)
    try:
        resolve_providers(providers, warn=False)
    except CeprError as e:
        raise _err("expert_providers: ", e) from None
    return ExpertSettings.model_validate({k: hps[k] for k in _aliases(ExpertSettings) if k in hps})


def _from_flat(hps: dict) -> CloudSettings:
    load_plugins(WHERE, hps.get("plugins"))
    name = hps.get("backend", "openai")
    config_model = backend_config_model(name)  # an unknown backend gets a "did you mean" here
    backend_keys = set(config_model.model_fields) - {"payload"}
    check_known(WHERE, hps, FLAT_KEYS | backend_keys)
    backend = BackendSettings(name=name, options={k: v for k, v in hps.items() if k in backend_keys})
    try:
        payload = PayloadConfig(mode=hps.get("payload", "summary+image"), resolution=hps.get("resolution"),
                                scale=hps.get("scale"),
                                codec=hps.get("codec", "fp16" if hps.get("payload") == "features" else "jpeg"),
                                quality=int(hps.get("quality", 85)))
    except ValueError as e:  # pydantic's ValidationError is a ValueError
        raise CeprError(f"{WHERE}: bad payload settings: {e}") from None
    possible = [payload, *_possible(hps, payload)]
    if any(p.sends_features for p in possible) and name != "grounded":
        raise CeprError(f"{WHERE}: payload: features (the grounded VLM's vision tokens) goes with backend: grounded "
                        "(its decoder in the cloud)")
    if name == "grounded" and any(p.mode not in ("features", "image") for p in possible):
        bad = next(p.mode for p in possible if p.mode not in ("features", "image"))
        raise CeprError(f"{WHERE}: backend: grounded reads payload: features (the edge's vision tokens) or "
                        f"payload: image (its own encoder runs on it), not {bad!r}")
    if name == "openai" and not backend.auto and "model" not in backend.options:
        raise CeprError(f"{WHERE}: the openai backend needs `model` (the served model's name)")
    if hps.get("server_metrics_url") is not None and (name != "openai" or backend.auto):
        raise CeprError(f"{WHERE}: server_metrics_url reads the speculative counters of a vLLM server you started "
                        "(backend: openai with your base_url); with base_url: auto or another backend cepr reads "
                        "its own engine's counters: drop it")
    try:
        chain = payload_policy(hps.get("payload_policy"), payload)
    except CeprError as e:
        raise _err("", e) from None
    _check_backend(config_model, backend, payload, chain)
    link = LinkSettings(preset=hps.get("link", "4g"), emulate=as_flag(WHERE, "emulate_link",
                                                                      hps.get("emulate_link", True)))
    try:
        link = link.model_copy(update={"seed": int(hps.get("link_seed", 0))})
        link.build()
    except ValueError as e:
        raise CeprError(f"{WHERE}: bad link: {e}") from None
    expert = _expert(hps)
    server = _server(hps, backend.auto)
    if (backend.options.get("message_style") == "vlm" and isinstance(server, LlamaCppServer)
            and not server.mmproj):
        raise CeprError(f"{WHERE}: message_style: vlm sends the frame as an image part: server: llamacpp needs "
                        "server_mmproj (the VLM's vision projector GGUF)")
    fusion = str(hps.get("fusion", DEFAULT_FUSION))
    try:
        get_fusion_rule(fusion)
    except CeprError as e:
        raise _err("", e) from None
    try:  # the flat keys of its own fields by their names (so an error names the key the YAML has)
        return CloudSettings.model_validate({
            "backend": backend, "server": server, "expert": expert, "payload": payload, "link": link,
            "payload_policy": hps.get("payload_policy"), "fusion": FUSION_REGISTRY.canonical(fusion),
            "plugins": hps.get("plugins"), **{k: hps[k] for k in _aliases(CloudSettings) if k in hps}})
    except ValidationError as e:
        raise CeprError(f"{WHERE}: {_validation_message(e)}") from None


def _possible(hps: dict, payload: PayloadConfig) -> list[PayloadConfig]:
    try:
        return list(payload_policy(hps.get("payload_policy"), payload).possible())
    except CeprError:
        return []  # reported below with its own message


def _check_backend(config_model, backend: BackendSettings, payload: PayloadConfig, chain: PayloadPolicyChain) -> None:
    """The backend's own config model, with stand-ins for what ``base_url: auto`` fills in at start, for every
    payload the policy can choose."""
    fields = config_model.model_fields
    stand_ins = {"base_url": "http://127.0.0.1/v1", "model": "auto"}
    args = {**{k: v for k, v in stand_ins.items() if k in fields}, **backend.options}
    if backend.auto:
        args["base_url"] = stand_ins["base_url"]
    if "payload" in fields:
        args["payload"] = payload
    try:
        config_model(**args)
        for p in chain.possible() if "payload" in fields else ():
            config_model(**{**args, "payload": p})
    except ValueError as e:
        raise CeprError(f"{WHERE}: bad backend settings: {e}"
                        + ("" if chain.fixed else f" (with payload_policy {', '.join(chain.names())})")) from None


def backend_config(settings: CloudSettings) -> dict:
    """The backend's config dict as its class takes it: its own keys, plus the payload when its config model has
    one (under a payload policy: the first possible payload with an image, so it checks at start what it may be
    asked to send)."""
    cfg = dict(settings.backend.options)
    if "payload" in backend_config_model(settings.backend.name).model_fields:
        chain = settings.chain
        cfg["payload"] = settings.payload if chain.fixed else next(
            (p for p in chain.possible() if p.sends_image), settings.payload)
    return cfg
