"""``cepr serve cloud``: the reference cloud expert behind an OpenAI-compatible HTTP API (needs the serve extra).

Endpoints: ``GET /v1/models``, ``POST /v1/chat/completions`` (plain, or streamed as server-sent events with
``stream_options.include_usage``), ``GET /health`` and ``GET /metrics`` (Prometheus, through ``prometheus_client``
with one registry per app). Its model id says plainly that it is not an LLM. ``FaultConfig`` injects delays,
garbage answers, HTTP errors (500, 503, 429, with or without ``Retry-After``) and a refused ``stream_options``, so
the client's fault handling is tested against a real server. ``Limits`` bounds what one request may ask: a body
over ``max_body_mb`` gets 413 (read no further), an image over ``max_image_pixels`` (from its header, before
decoding) or a question over ``max_question_chars`` gets 400, as does a malformed camera block or scene summary.
"""

import asyncio
import json
import logging
import random
import threading
import time
import uuid
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from cepr.cloud.expert import (
    EXPERT_MODEL_NAME,
    MAX_IMAGE_PIXELS,
    MAX_QUESTION_CHARS,
    ReferenceExpert,
    RequestError,
)
from cepr.servers.base import watch_parent_from_env

log = logging.getLogger(__name__)
MAX_BODY_MB = 20.0  # a 640x480 PNG is under 1 MB in base64; a 4096x4096 one about 30 MB at worst


@dataclass
class Limits:
    """What one request may ask: larger bodies get 413; larger images and longer questions get 400."""
    max_body_mb: float = MAX_BODY_MB
    max_image_pixels: int = MAX_IMAGE_PIXELS
    max_question_chars: int = MAX_QUESTION_CHARS

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)


@dataclass
class FaultConfig:
    delay_ms: float = 0.0  # added before every answer
    garbage_rate: float = 0.0  # share of answers replaced by text that is not JSON
    error_rate: float = 0.0  # share of requests answered with HTTP error_status
    no_stream_options: bool = False  # refuse stream_options with 400, like servers that do not know it
    seed: int = 0
    error_status: int = 500  # status of injected errors: 500, 503 (overloaded), 429 (rate limited), ...
    fail_first: int = 0  # the first N chat requests get an injected error, whatever error_rate says
    retry_after_s: float | None = None  # a Retry-After header (seconds) on injected errors


class ServerMetrics:
    """What ``/metrics`` shows, in a registry of this app's own (several apps in one process do not clash)."""

    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("cepr_requests", "chat completion requests", registry=r)
        self.errors = Counter("cepr_request_errors", "requests answered with an error", registry=r)
        self.image_requests = Counter("cepr_image_requests", "requests that carried an image", registry=r)
        self.prompt_tokens = Counter("cepr_prompt_tokens", "prompt tokens (estimated)", registry=r)
        self.completion_tokens = Counter("cepr_completion_tokens", "completion tokens (estimated)", registry=r)
        self.body_bytes = Counter("cepr_request_body_bytes", "bytes of chat request bodies received in full",
                                  registry=r)
        self.seconds = Histogram("cepr_request_seconds", "time to answer a request, body read to answer ready",
                                 registry=r)

    def answered(self, reply, seconds: float) -> None:
        self.prompt_tokens.inc(reply.prompt_tokens)
        self.completion_tokens.inc(reply.completion_tokens)
        if reply.source.startswith("image"):
            self.image_requests.inc()
        self.seconds.observe(seconds)

    def response(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class FaultInjector:
    """Decides, per chat request, which of ``FaultConfig``'s faults it meets (seeded, so runs repeat)."""

    def __init__(self, cfg: FaultConfig):
        self.cfg = cfg
        self._rng = random.Random(cfg.seed)
        self._lock = threading.Lock()
        self._seen = 0

    def refuses(self, body: dict) -> bool:
        return self.cfg.no_stream_options and "stream_options" in body

    def roll(self) -> tuple[bool, bool]:
        """(answer with an injected error, garble the answer) for the next request."""
        c = self.cfg
        with self._lock:
            self._seen += 1
            roll_error, roll_garbage = self._rng.random(), self._rng.random()
        fail = self._seen <= c.fail_first or bool(c.error_rate and roll_error < c.error_rate)
        return fail, bool(c.garbage_rate and roll_garbage < c.garbage_rate)

    def error(self) -> tuple[int, str, str, dict]:
        """(status, message, error type, headers) of an injected error."""
        status = self.cfg.error_status
        headers = {} if self.cfg.retry_after_s is None else {"Retry-After": f"{self.cfg.retry_after_s:g}"}
        if status == 429:
            return status, "injected rate limit", "rate_limit_error", headers
        return status, "injected server error", "server_error", headers

    async def delay(self) -> None:
        if self.cfg.delay_ms:
            await asyncio.sleep(self.cfg.delay_ms / 1e3)

    def garble(self, text: str) -> str:
        with self._lock:
            return "I am not sure what you mean. " + "".join(self._rng.choice("abc{}[]") for _ in range(12))


def create_app(model: str = "cloud", threads: int = 1, faults: FaultConfig | None = None, expert=None,
               min_object_confidence: float | None = None, limits: Limits | None = None,
               sessions: int | None = None, providers="cpu") -> FastAPI:
    """``sessions``: model sessions segmenting at once (None: ``cepr.cloud.expert.default_sessions``), ``threads``
    intra-op threads each."""
    limits = limits or Limits()
    if expert is None:
        kw = {} if min_object_confidence is None else {"min_object_confidence": min_object_confidence}
        expert = ReferenceExpert(model, threads=threads, max_image_pixels=limits.max_image_pixels,
                                 max_question_chars=limits.max_question_chars,
                                 sessions=sessions, providers=providers, **kw)
    name = getattr(expert, "model_name", EXPERT_MODEL_NAME)
    app = FastAPI(title="cepr reference cloud expert (not an LLM)" if name == EXPERT_MODEL_NAME
                  else f"cepr grounded VLM ({name})")
    app.state.metrics = metrics = ServerMetrics()
    _add_info_routes(app, metrics, expert, name)
    _add_chat_route(app, expert, FaultInjector(faults or FaultConfig()), metrics, limits, name)
    return app


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it is known to exceed ``limit`` bytes (the rest is never read)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks, n = [], 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _add_info_routes(app: FastAPI, metrics: ServerMetrics, expert, name: str) -> None:
    @app.get("/health")
    def health():
        return {"status": "ok", "model": name, "sessions": getattr(expert, "sessions", None),
                "threads": getattr(expert, "threads", None), "provider": getattr(expert, "provider", None)}

    @app.get("/metrics")
    def prometheus():
        return metrics.response()

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0,
                                            "owned_by": "cepr", "provider": getattr(expert, "provider", None)}]}


def _add_chat_route(app: FastAPI, expert, faults: FaultInjector, metrics: ServerMetrics, limits: Limits,
                    name: str) -> None:
    def err(status: int, message: str, kind: str = "invalid_request_error", headers: dict | None = None):
        metrics.errors.inc()
        return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status, headers=headers)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        t0 = time.perf_counter()
        raw = await _read_body(request, limits.max_body_bytes)
        if raw is None:
            return err(413, f"request body larger than {limits.max_body_mb:g} MB (--max-body-mb)")
        metrics.body_bytes.inc(len(raw))
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return err(400, "request body is not JSON")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return err(400, "'messages' (a list) is required")
        metrics.requests.inc()
        if faults.refuses(body):
            return err(400, "unknown field: stream_options")
        fail, garble = faults.roll()
        if fail:
            return err(*faults.error())
        await faults.delay()
        try:
            reply = await run_in_threadpool(expert.answer, body["messages"])
        except RequestError as e:
            return err(400, str(e))
        except Exception as e:  # a bug answers one request with 500, with its name, not a crash
            log.exception("the expert failed on a request")
            return err(500, f"internal error: {type(e).__name__}: {e}", "server_error")
        text = faults.garble(reply.text) if garble else reply.text
        metrics.answered(reply, time.perf_counter() - t0)
        return _completion(body, text, reply, name)


def _completion(body: dict, text: str, reply, name: str = EXPERT_MODEL_NAME):
    """The answer as one chat.completion, or as a stream of chat.completion.chunk events."""
    cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    # our counts are estimates (words and punctuation, plus image patches), not a tokenizer's: say so, in an
    # extra usage field that OpenAI-compatible clients pass through
    usage = {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
             "total_tokens": reply.prompt_tokens + reply.completion_tokens, "estimated": True}
    if not body.get("stream"):
        return {"id": cid, "object": "chat.completion", "created": created, "model": name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop"}], "usage": usage}
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    return StreamingResponse(_events(cid, created, text, usage if include_usage else None, name),
                             media_type="text/event-stream")


def _events(cid: str, created: int, text: str, usage: dict | None, name: str = EXPERT_MODEL_NAME):
    """Server-sent events: the role, the text six characters at a time, the finish, the usage if asked, DONE."""

    def chunk(delta, finish=None, with_usage=False):
        d = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": name,
             "choices": [] if with_usage else [{"index": 0, "delta": delta, "finish_reason": finish}]}
        if with_usage:
            d["usage"] = usage
        return f"data: {json.dumps(d)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    for i in range(0, len(text), 6):
        yield chunk({"content": text[i:i + 6]})
    yield chunk({}, finish="stop")
    if usage is not None:
        yield chunk(None, with_usage=True)
    yield "data: [DONE]\n\n"


def serve(host: str = "127.0.0.1", port: int = 8000, model: str = "cloud", threads: int = 1,
          faults: FaultConfig | None = None, log_level: str = "warning",
          min_object_confidence: float | None = None, limits: Limits | None = None,
          sessions: int | None = None, providers="cpu", vlm: str | None = None, vlm_engine: str = "llamacpp",
          vlm_quant: str = "q8_0", vllm_python: str | None = None) -> None:
    """``vlm``: a grounded VLM answers instead of the reference expert (``cepr.cloud.grounded_backend``), its
    decoder on ``vlm_engine``."""
    watch_parent_from_env()  # started by a runner (base_url: auto): exit when it is gone
    expert = None
    if vlm:
        from cepr.cloud.grounded_backend import GroundedExpert

        limits = limits or Limits()
        expert = GroundedExpert(vlm, vlm_engine, vlm_quant, threads, vllm_python, limits.max_image_pixels,
                                limits.max_question_chars)
    try:
        uvicorn.run(create_app(model, threads, faults, expert=expert, min_object_confidence=min_object_confidence,
                               limits=limits, sessions=sessions, providers=providers),
                    host=host, port=port, log_level=log_level)
    finally:
        if expert is not None:
            expert.close()
