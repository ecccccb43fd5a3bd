"""``cepr serve llamacpp``: a GGUF model behind llama.cpp's OpenAI-compatible server (llama-cpp-python's), in
this process, so that it stops with the runner that started it like the reference expert does.

Speculative decoding is configuration: ``speculative: prompt-lookup`` turns on llama-cpp-python's prompt lookup
decoding (draft tokens copied from n-gram matches in the prompt, ``draft_tokens`` at a time), the one method its
server offers; a separate draft model is llama.cpp's own ``llama-server`` binary's feature, not this package's.
"""

from __future__ import annotations

from dataclasses import dataclass

from cepr.errors import CeprError

SPECULATIVE = ("none", "prompt-lookup")
# chat formats of the shipped models whose GGUF carries no chat template (llama-cpp-python would use llama-2's)
CHAT_FORMATS = {"gemma3-270m": "gemma"}
SERVER_EXTRA = "pip install -e '.[llm,serve]' (llama-cpp-python's server needs sse-starlette, starlette-context, " \
               "pydantic-settings)"


@dataclass
class LlamaCppServerConfig:
    model: str = "gemma3-270m"  # shipped name or GGUF path
    host: str = "127.0.0.1"
    port: int = 8001
    n_ctx: int = 4096
    threads: int = 1
    speculative: str = "none"
    draft_tokens: int = 10
    chat_format: str | None = None  # None: the GGUF's own chat template
    alias: str | None = None  # the model id clients name (default: the GGUF file's name)

    def check(self) -> None:
        if self.speculative not in SPECULATIVE:
            from cepr.errors import did_you_mean

            raise CeprError(f"speculative must be one of {', '.join(SPECULATIVE)}, not {self.speculative!r}"
                            f"{did_you_mean(self.speculative, SPECULATIVE)}")
        for k in ("n_ctx", "threads", "draft_tokens", "port"):
            if int(getattr(self, k)) < (0 if k == "port" else 1):
                raise CeprError(f"{k} must be positive, got {getattr(self, k)}")


def create_app(cfg: LlamaCppServerConfig):
    """llama-cpp-python's FastAPI app for ``cfg`` (the model is loaded here)."""
    cfg.check()
    try:
        from llama_cpp.server.app import create_app as llama_app
        from llama_cpp.server.settings import ModelSettings, ServerSettings
    except ImportError as e:
        raise CeprError(f"cepr serve llamacpp needs llama-cpp-python and its server's packages ({e.name} is "
                        f"missing): {SERVER_EXTRA}") from None
    from cepr.llm.llamacpp import llm_path

    path = llm_path(cfg.model)
    ms = {"model": str(path), "model_alias": cfg.alias or path.name, "n_ctx": int(cfg.n_ctx),
          "n_threads": int(cfg.threads), "n_threads_batch": int(cfg.threads), "verbose": False}
    chat_format = cfg.chat_format or CHAT_FORMATS.get(str(cfg.model))
    if chat_format:
        ms["chat_format"] = chat_format
    if cfg.speculative == "prompt-lookup":
        ms.update(draft_model="prompt-lookup-decoding", draft_model_num_pred_tokens=int(cfg.draft_tokens))
    return llama_app(server_settings=ServerSettings(host=cfg.host, port=int(cfg.port)),
                     model_settings=[ModelSettings(**ms)])


def serve(cfg: LlamaCppServerConfig, log_level: str = "warning") -> None:
    import uvicorn

    from cepr.cloud.autoserve import watch_parent_from_env

    app = create_app(cfg)
    watch_parent_from_env()  # started by a runner: exit when it is gone
    uvicorn.run(app, host=cfg.host, port=int(cfg.port), log_level=log_level)
