"""``cepr serve cloud``: the reference cloud expert behind an OpenAI-compatible HTTP API.

Endpoints: ``GET /v1/models``, ``POST /v1/chat/completions`` (plain, or streamed as server-sent events with
``stream_options.include_usage``), ``GET /health`` and ``GET /metrics`` (Prometheus text). Its model id says
plainly that it is not an LLM. ``FaultConfig`` injects delays, garbage answers and HTTP 500s, so the client's
fault handling is tested against a real server.
"""


import json
import random
import threading
import time
import uuid
from dataclasses import dataclass, field

from cepr.cloud.expert import EXPERT_MODEL_NAME, ReferenceExpert, RequestError


@dataclass
class FaultConfig:
    delay_ms: float = 0.0  # added before every answer
    garbage_rate: float = 0.0  # share of answers replaced by text that is not JSON
    error_rate: float = 0.0  # share of requests answered with HTTP 500
    no_stream_options: bool = False  # refuse stream_options with 400, like servers that do not know it
    seed: int = 0


@dataclass
class _Metrics:
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: int = 0
    errors: int = 0
    image_requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    def text(self) -> str:
        with self.lock:
            rows = [("cepr_requests_total", "counter", "chat completion requests", self.requests),
                    ("cepr_request_errors_total", "counter", "requests answered with an error", self.errors),
                    ("cepr_image_requests_total", "counter", "requests that carried an image", self.image_requests),
                    ("cepr_prompt_tokens_total", "counter", "prompt tokens (estimated)", self.prompt_tokens),
                    ("cepr_completion_tokens_total", "counter", "completion tokens (estimated)",
                     self.completion_tokens),
                    ("cepr_request_seconds_sum", "counter", "time spent answering", round(self.seconds, 6))]
        out = []
        for name, kind, help_, v in rows:
            out += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {v}"]
        return "\n".join(out) + "\n"


def create_app(model: str = "cloud", threads: int = 1, faults: FaultConfig | None = None, expert=None,
               min_object_confidence: float | None = None):
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

    if expert is None:
        kw = {} if min_object_confidence is None else {"min_object_confidence": min_object_confidence}
        expert = ReferenceExpert(model, threads=threads, **kw)
    faults = faults or FaultConfig()
    rng = random.Random(faults.seed)
    rng_lock = threading.Lock()
    metrics = _Metrics()
    app = FastAPI(title="cepr reference cloud expert (not an LLM)")

    def err(status: int, message: str, kind: str = "invalid_request_error"):
        with metrics.lock:
            metrics.errors += 1
        return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)

    @app.get("/health")
    def health():
        return {"status": "ok", "model": EXPERT_MODEL_NAME}

    @app.get("/metrics")
    def prometheus():
        return PlainTextResponse(metrics.text(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": EXPERT_MODEL_NAME, "object": "model", "created": 0,
                                            "owned_by": "cepr"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        t0 = time.perf_counter()
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return err(400, "request body is not JSON")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return err(400, "'messages' (a list) is required")
        with metrics.lock:
            metrics.requests += 1
        if faults.no_stream_options and "stream_options" in body:
            return err(400, "unknown field: stream_options")
        with rng_lock:
            roll_error, roll_garbage = rng.random(), rng.random()
        if faults.error_rate and roll_error < faults.error_rate:
            return err(500, "injected server error", "server_error")
        if faults.delay_ms:
            import asyncio

            await asyncio.sleep(faults.delay_ms / 1e3)
        import anyio

        try:
            reply = await anyio.to_thread.run_sync(expert.answer, body["messages"])
        except RequestError as e:
            return err(400, str(e))
        text = reply.text
        if faults.garbage_rate and roll_garbage < faults.garbage_rate:
            text = "I am not sure what you mean. " + "".join(rng.choice("abc{}[]") for _ in range(12))
        with metrics.lock:
            metrics.prompt_tokens += reply.prompt_tokens
            metrics.completion_tokens += reply.completion_tokens
            metrics.image_requests += reply.source.startswith("image")
            metrics.seconds += time.perf_counter() - t0
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        usage = {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
                 "total_tokens": reply.prompt_tokens + reply.completion_tokens}
        if not body.get("stream"):
            return {"id": cid, "object": "chat.completion", "created": created, "model": EXPERT_MODEL_NAME,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "finish_reason": "stop"}], "usage": usage}
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta, finish=None, with_usage=False):
            d = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": EXPERT_MODEL_NAME,
                 "choices": [] if with_usage else [{"index": 0, "delta": delta, "finish_reason": finish}]}
            if with_usage:
                d["usage"] = usage
            return f"data: {json.dumps(d)}\n\n"

        def events():
            yield chunk({"role": "assistant", "content": ""})
            for i in range(0, len(text), 6):
                yield chunk({"content": text[i:i + 6]})
            yield chunk({}, finish="stop")
            if include_usage:
                yield chunk(None, with_usage=True)
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def serve(host: str = "127.0.0.1", port: int = 8000, model: str = "cloud", threads: int = 1,
          faults: FaultConfig | None = None, log_level: str = "warning",
          min_object_confidence: float | None = None) -> None:
    import uvicorn

    uvicorn.run(create_app(model, threads, faults, min_object_confidence=min_object_confidence), host=host,
                port=port, log_level=log_level)
