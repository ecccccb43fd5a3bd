"""``cepr serve llamacpp``: a GGUF model behind llama.cpp's OpenAI-compatible server (llama-cpp-python's), in
this process, so that it stops with the runner that started it like the reference expert does.

Speculative decoding is configuration: ``speculative: prompt-lookup`` turns on llama-cpp-python's prompt lookup
decoding (draft tokens copied from n-gram matches in the prompt, ``draft_tokens`` at a time), the one method its
server offers; a separate draft model is llama.cpp's own ``llama-server`` binary's feature, not this package's.

Images: ``mmproj`` (a vision projector GGUF for the model, e.g. the tiny one of ``cepr models tiny``) gives the
model llama-cpp-python's multimodal chat handler (``chat_format: mtmd``: the GGUF's own chat template, libmtmd for
the images), so a user turn may be a list of parts with OpenAI ``image_url`` parts (data URIs). The template must
take list content (the tiny VLM's does). An image llama.cpp cannot decode is answered 400 with the reason, not a
bare 500.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

import cv2
import numpy as np

from cepr.errors import CeprError, did_you_mean
from cepr.llm.llamacpp import llm_path
from cepr.llm.mtmd import mmproj_path
from cepr.servers.base import watch_parent_from_env

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
    mmproj: str | None = None  # a vision projector GGUF: the server takes images

    def check(self) -> None:
        if self.speculative not in SPECULATIVE:
            raise CeprError(f"speculative must be one of {', '.join(SPECULATIVE)}, not {self.speculative!r}"
                            f"{did_you_mean(self.speculative, SPECULATIVE)}")
        for k in ("n_ctx", "threads", "draft_tokens", "port"):
            if int(getattr(self, k)) < (0 if k == "port" else 1):
                raise CeprError(f"{k} must be positive, got {getattr(self, k)}")
        if self.mmproj is not None:
            mmproj_path(self.mmproj)


def create_app(cfg: LlamaCppServerConfig):
    """llama-cpp-python's FastAPI app for ``cfg`` (the model is loaded here)."""
    cfg.check()
    try:
        from llama_cpp.server.app import create_app as llama_app
        from llama_cpp.server.settings import ModelSettings, ServerSettings
    except ImportError as e:
        raise CeprError(f"cepr serve llamacpp needs llama-cpp-python and its server's packages ({e.name} is "
                        f"missing): {SERVER_EXTRA}") from None

    path = llm_path(cfg.model)
    ms = {"model": str(path), "model_alias": cfg.alias or path.name, "n_ctx": int(cfg.n_ctx),
          "n_threads": int(cfg.threads), "n_threads_batch": int(cfg.threads), "verbose": False}
    chat_format = cfg.chat_format or CHAT_FORMATS.get(str(cfg.model))
    if cfg.mmproj is not None:
        ms["clip_model_path"] = str(mmproj_path(cfg.mmproj))  # a path, or a shipped VLM's projector by name
        chat_format = cfg.chat_format or "mtmd"
    if chat_format:
        ms["chat_format"] = chat_format
    if cfg.speculative == "prompt-lookup":
        ms.update(draft_model="prompt-lookup-decoding", draft_model_num_pred_tokens=int(cfg.draft_tokens))
    app = llama_app(server_settings=ServerSettings(host=cfg.host, port=int(cfg.port)),
                    model_settings=[ModelSettings(**ms)])
    if cfg.mmproj is not None:
        _image_errors_as_400(app)
    return app


def _image_errors_as_400(app) -> None:
    """Check the data-URI images of a chat request before llama-cpp-python sees them: its multimodal handler
    answers an image it cannot decode with a bare 500 ("Failed to create bitmap"); this answers 400 naming the
    message and part, and what was wrong."""
    app.add_middleware(_ImageCheck)


def image_problem(body: bytes) -> str | None:
    """Why a chat request's data-URI image cannot be used, or None (other URLs are left to the server)."""

    try:
        req = json.loads(body)
    except ValueError:
        return None  # the server's own validation answers this
    messages = req.get("messages") if isinstance(req, dict) else None
    for i, msg in enumerate(messages if isinstance(messages, list) else []):
        content = msg.get("content") if isinstance(msg, dict) else None
        for j, part in enumerate(content if isinstance(content, list) else []):
            if not isinstance(part, dict) or part.get("type") != "image_url":
                continue
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            where = f"messages[{i}].content[{j}]"
            if not isinstance(url, str) or not url.startswith("data:"):
                continue
            head, _, data = url.partition(",")
            try:
                raw = base64.b64decode(data, validate=True) if head.endswith(";base64") else data.encode()
            except (binascii.Error, ValueError):
                return f"{where}: the image's data URI is not valid base64"
            if not raw:
                return f"{where}: the image's data URI is empty"
            if cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR) is None:
                return (f"{where}: {len(raw)} bytes that do not decode as an image (PNG, JPEG, BMP, ...; they start "
                        f"with {raw[:8]!r})")
    return None


class _ImageCheck:
    """ASGI middleware: POST .../chat/completions with an undecodable data-URI image gets 400."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].endswith("/chat/completions"):
            return await self.app(scope, receive, send)
        parts, more = [], True
        while more:
            msg = await receive()
            if msg["type"] != "http.request":
                return await self.app(scope, receive, send)
            parts.append(msg.get("body", b""))
            more = msg.get("more_body", False)
        body = b"".join(parts)
        problem = image_problem(body)
        if problem:
            from starlette.responses import JSONResponse

            resp = JSONResponse({"error": {"message": problem, "type": "invalid_request_error"}}, status_code=400)
            return await resp(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


def serve(cfg: LlamaCppServerConfig, log_level: str = "warning") -> None:
    import uvicorn


    app = create_app(cfg)
    watch_parent_from_env()  # started by a runner: exit when it is gone
    uvicorn.run(app, host=cfg.host, port=int(cfg.port), log_level=log_level)
