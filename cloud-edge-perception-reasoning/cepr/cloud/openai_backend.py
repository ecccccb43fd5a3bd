"""Cloud backend for any OpenAI-compatible chat-completions server (vLLM, llama.cpp, the OpenAI API, cepr's own
reference expert), through the official ``openai`` SDK.

* the API key is read from the environment variable named by ``api_key_env``, never from YAML;
* streaming (default) measures time to first token, the gaps between text chunks and, per token, the inter-token
  latency (first to last text chunk over completion tokens - 1: a chunk may carry several tokens, as vLLM's do under
  speculative decoding) and tokens/s; usage comes from
  ``stream_options.include_usage`` where the server supports it, else it is counted here (marked estimate);
* request and response *bodies* are counted at the HTTP transport, per request, over every attempt that went on
  the wire (retries included; an attempt that found no connection sent nothing and counts nothing);
* a per-request deadline (``timeout_s``) turns a slow answer into ``fallback`` (the edge answer stands);
* connection errors, 429 and 5xx are retried by ``tenacity``: the wait is what the server's ``Retry-After`` asks,
  else exponential backoff with full jitter, and no retry is made whose wait would end past the deadline (the SDK's
  own retries are off: their waits cannot be bounded by a deadline, and they retry timeouts);
* after ``circuit_failures`` failures in a row a circuit breaker skips the cloud for ``circuit_cooldown_s``;
  unparsable answers become ``error`` results.
"""

from __future__ import annotations

import email.utils
import os
import re
import threading
import time
import uuid
from typing import Literal

import tenacity
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cepr.cloud.base import DEFAULT_SYSTEM_PROMPT
from cepr.cloud.parsing import AnswerParseError, parse_answer
from cepr.cloud.payload import build_user_content, encode_image
from cepr.errors import CeprError
from cepr.llm.vlm import vlm_question
from cepr.records import CloudRequest, CloudResult, PayloadConfig, Timings, Usage

_ID_HEADER = "x-cepr-request-id"
MessageStyle = Literal["chat", "vlm"]


class OpenAIBackendConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: str = "http://127.0.0.1:8000/v1"
    model: str
    api_key_env: str | None = Field(None, description="name of the environment variable holding the API key")
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    timeout_s: float = Field(30.0, gt=0, description="deadline for one request, first byte to last")
    stream: bool = True
    max_tokens: int = Field(128, gt=0)
    temperature: float = 0.0
    extra_body: dict = Field(default_factory=dict, description="passed through to the server (e.g. vLLM options)")
    content_format: Literal["parts", "string"] = Field(
        "parts", description="the user turn as a list of content parts (OpenAI's form, needed for images) or, "
                             "without an image, as one string: llama-cpp-python's server drops text parts it "
                             "is given as a list for models without a multimodal chat handler")
    answer_format: Literal["none", "json_schema", "json_object"] = Field(
        "none", description="constrain the reply to the answer JSON with the task's answers as an enum: json_schema "
                            "is the OpenAI API's (vLLM, OpenAI), json_object with a schema is llama-cpp-python's")
    retries: int = Field(2, ge=0, description="retries on connection errors, 429 and 5xx, within the deadline")
    backoff_s: float = Field(0.05, ge=0, description="longest wait before the first retry; doubles per retry")
    backoff_max_s: float = Field(2.0, ge=0, description="cap on the backoff wait (a server's Retry-After wins)")
    circuit_failures: int = Field(5, ge=1, description="consecutive failures that open the circuit")
    circuit_cooldown_s: float = Field(10.0, ge=0)
    payload: PayloadConfig = Field(default_factory=PayloadConfig)
    message_style: MessageStyle = Field(
        "chat", description="chat: system prompt, then the question, camera, summary and image; vlm: the one user "
                            "turn our own VLM (cepr vlm train) learned: the image, then the question with its "
                            "allowed answers (needs payload: image)")

    @model_validator(mode="after")
    def _vlm_style(self):
        check_vlm_style(self)
        return self


def check_vlm_style(cfg) -> None:
    """``message_style: vlm`` sends the frame and the question only: the payload must be ``image`` (no summary
    the model never learned to read) and, where the config has one, ``content_format: parts``."""
    if getattr(cfg, "message_style", "chat") != "vlm":
        return
    if cfg.payload.mode != "image":
        raise ValueError(f"message_style: vlm sends the frame and the question only (what cepr vlm train taught "
                         f"the model): set payload: image, not payload: {cfg.payload.mode}")
    if getattr(cfg, "content_format", "parts") != "parts":
        raise ValueError("message_style: vlm sends the frame as an image part: content_format must be parts "
                         "(with server: llamacpp, give server_mmproj, the VLM's vision projector)")


def vlm_messages(req: CloudRequest, payload: PayloadConfig) -> list[dict]:
    """The prompt our own VLM learned (``cepr vlm train``): one user turn, the image first, then
    ``vlm_question(prompt, answers)``; no system message, summary or camera."""
    if not payload.sends_image:
        raise CeprError(f"message_style: vlm needs the frame, but payload: {payload.mode} sends none: set "
                        "payload: image")
    if req.image is None:
        raise CeprError(f"message_style: vlm needs the frame, but request {req.key or req.task!r} carries no image")
    image = encode_image(req.image, payload)
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image.data_url()}},
                                         {"type": "text", "text": vlm_question(req.prompt, req.answers)}]}]


def build_messages(cfg: OpenAIBackendConfig, req: CloudRequest) -> list[dict]:
    """System prompt plus the user turn carrying what the payload settings send (the request's own ``payload``
    when it has one, else the backend's); with ``message_style: vlm`` the single user turn of :func:`vlm_messages`."""
    p = req.payload if req.payload is not None else cfg.payload
    if getattr(cfg, "message_style", "chat") == "vlm":
        return vlm_messages(req, p)
    image = encode_image(req.image, p) if (p.sends_image and req.image is not None) else None
    summary = req.summary if p.sends_summary else None
    content = build_user_content(req.user_prompt(), summary, image, req.camera)
    if getattr(cfg, "content_format", "parts") == "string" and all(p["type"] == "text" for p in content):
        content = "\n".join(p["text"] for p in content)
    return [{"role": "system", "content": cfg.system_prompt}, {"role": "user", "content": content}]


def answer_schema(answers) -> dict:
    """The JSON schema of a reply: the answer (one of ``answers``), a confidence in [0, 1], a short reason."""
    return {"type": "object",
            "properties": {"answer": {"type": "string", "enum": list(answers)},
                           "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                           "reason": {"type": "string", "maxLength": 160}},
            "required": ["answer", "confidence"], "additionalProperties": False}


def response_format(kind: str, answers) -> dict:
    """``response_format`` for a constrained reply: the OpenAI API's ``json_schema`` form, or the ``json_object``
    form with a ``schema`` that llama-cpp-python's server reads."""
    if kind == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "answer", "schema": answer_schema(answers),
                                                        "strict": True}}
    return {"type": "json_object", "schema": answer_schema(answers)}


def _server_usage(u) -> Usage:
    """Token counts a server reported: "server" when it counted them, "server-estimate" when it says (an extra
    ``estimated: true`` in usage, as cepr's reference expert does) that they are estimates."""
    extra = getattr(u, "model_extra", None) or {}
    return Usage(u.prompt_tokens, u.completion_tokens,
                 counted="server-estimate" if extra.get("estimated") else "server")


def estimate_tokens(text: str) -> int:
    """A rough count (words and punctuation marks) for servers that report no usage."""
    return len(re.findall(r"\w+|[^\w\s]", text))


def retry_after_s(error: BaseException | None) -> float | None:
    """Seconds an HTTP error response asks the client to wait (``retry-after-ms``, or ``Retry-After`` as seconds
    or as an HTTP date); None when it asks nothing."""
    response = getattr(error, "response", None)
    if response is None:
        return None
    headers = response.headers
    try:
        if headers.get("retry-after-ms"):
            return max(0.0, float(headers["retry-after-ms"]) / 1e3)
        value = headers.get("retry-after")
        if not value:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class _ByteCounter:
    """Counts request and response body bytes per request id, at the HTTP transport."""

    def __init__(self):
        self.lock = threading.Lock()
        self.up: dict[str, int] = {}
        self.down: dict[str, int] = {}

    def add(self, table: dict, rid: str, n: int) -> None:
        if rid:
            with self.lock:
                table[rid] = table.get(rid, 0) + n

    def pop(self, rid: str) -> tuple[int, int]:
        with self.lock:
            return self.up.pop(rid, 0), self.down.pop(rid, 0)


def _counting_client(counter: _ByteCounter, timeout: float):
    import httpx2

    class _CountingStream(httpx2.SyncByteStream):
        def __init__(self, inner, rid):
            self.inner, self.rid = inner, rid

        def __iter__(self):
            for chunk in self.inner:
                counter.add(counter.down, self.rid, len(chunk))
                yield chunk

        def close(self):
            close = getattr(self.inner, "close", None)
            if close:
                close()

    class _CountingTransport(httpx2.BaseTransport):
        def __init__(self):
            self.inner = httpx2.HTTPTransport()

        def handle_request(self, request):
            rid = request.headers.get(_ID_HEADER, "")
            sent = len(getattr(request, "content", b"") or b"")
            try:
                response = self.inner.handle_request(request)
            except (httpx2.ConnectError, httpx2.ConnectTimeout):
                raise  # no connection: the body never left
            except BaseException:
                counter.add(counter.up, rid, sent)  # the body went out; the answer did not come
                raise
            counter.add(counter.up, rid, sent)
            response.stream = _CountingStream(response.stream, rid)
            return response

        def close(self):
            self.inner.close()

    return httpx2.Client(transport=_CountingTransport(), timeout=timeout)


class OpenAIBackend:
    name = "openai"

    def __init__(self, config: OpenAIBackendConfig | dict):
        import openai

        self.cfg = config if isinstance(config, OpenAIBackendConfig) else OpenAIBackendConfig(**config)
        key = "not-needed"
        if self.cfg.api_key_env:
            key = os.environ.get(self.cfg.api_key_env)
            if not key:
                raise CeprError(f"environment variable {self.cfg.api_key_env} (api_key_env) is not set")
        self.counter = _ByteCounter()
        self._http = _counting_client(self.counter, self.cfg.timeout_s)
        self.client = openai.OpenAI(api_key=key, base_url=self.cfg.base_url, max_retries=0,
                                    timeout=self.cfg.timeout_s, http_client=self._http)
        self._openai = openai
        self._lock = threading.Lock()
        self._failures = 0
        self._open_until = 0.0
        self._usage_in_stream = True  # until the server refuses stream_options

    # ---- circuit breaker ---------------------------------------------------------------------------
    def _circuit_open(self) -> bool:
        with self._lock:
            return time.monotonic() < self._open_until

    def _record(self, ok: bool) -> None:
        with self._lock:
            if ok:
                self._failures = 0
                return
            self._failures += 1
            if self._failures >= self.cfg.circuit_failures:
                self._open_until = time.monotonic() + self.cfg.circuit_cooldown_s
                self._failures = 0

    # ---- one request -----------------------------------------------------------------------------
    def messages(self, req: CloudRequest) -> list[dict]:
        return build_messages(self.cfg, req)

    def infer(self, req: CloudRequest) -> CloudResult:
        if self._circuit_open():
            return CloudResult("fallback", reason="circuit open: cloud skipped after repeated failures",
                               model=self.cfg.model, attempts=0)
        started = time.time()
        t0 = time.perf_counter()  # the cloud's latency and deadline start before the payload is built and encoded
        msgs = self.messages(req)
        rid = uuid.uuid4().hex  # one id for every attempt: the transport adds up the bytes of all of them
        retrying = self._retrying()
        try:
            text, usage, timings = retrying(self._call, msgs, rid, t0, req.answers)
        except Exception as e:  # noqa: BLE001 - a server that returns garbage must not crash the run
            up, down = self.counter.pop(rid)
            self._record(False)
            status, reason = self._failure(e)
            return CloudResult(status, reason=reason[:300], bytes_up=up, bytes_down=down, model=self.cfg.model,
                               attempts=retrying.statistics["attempt_number"],
                               timings=Timings(sent_at=started, total_ms=1e3 * (time.perf_counter() - t0)))
        up, down = self.counter.pop(rid)
        self._record(True)  # the service works, whether or not this answer is usable
        timings.sent_at = started
        common = {"raw_text": text, "usage": usage, "timings": timings, "bytes_up": up, "bytes_down": down,
                  "model": self.cfg.model, "attempts": retrying.statistics["attempt_number"]}
        try:
            answer, reason, conf = parse_answer(text, req.answers)
        except AnswerParseError as e:
            return CloudResult("error", reason=f"unparsable answer: {e}", **common)
        return CloudResult("ok", answer=answer, reason=reason, confidence=conf, **common)

    # ---- retries -------------------------------------------------------------------------------------
    def _retryable(self, e: BaseException) -> bool:
        """Connection errors, 429 and 5xx; a timeout is final (the deadline is spent)."""
        oa = self._openai
        return (isinstance(e, (oa.APIConnectionError, oa.RateLimitError, oa.InternalServerError))
                and not isinstance(e, oa.APITimeoutError))

    def _retrying(self) -> tenacity.Retrying:
        """A fresh retry controller per request (its statistics hold that request's attempt count): at most
        ``retries`` retries, waiting what the server's Retry-After asks or else a random time up to
        ``backoff_s * 2**(retry - 1)`` (capped at ``backoff_max_s``; "full jitter"), and no retry whose wait
        would end past the deadline."""
        cfg = self.cfg
        backoff = tenacity.wait_random_exponential(multiplier=cfg.backoff_s, max=cfg.backoff_max_s)

        def wait(state: tenacity.RetryCallState) -> float:
            after = retry_after_s(state.outcome.exception())
            return backoff(state) if after is None else after

        return tenacity.Retrying(
            retry=tenacity.retry_if_exception(self._retryable), wait=wait, reraise=True,
            stop=tenacity.stop_after_attempt(cfg.retries + 1) | tenacity.stop_before_delay(cfg.timeout_s))

    def _failure(self, e: BaseException) -> tuple[str, str]:
        """(status, reason) of a request that got no answer after its last attempt."""
        if isinstance(e, self._openai.APITimeoutError):
            return "fallback", f"timeout after {self.cfg.timeout_s:g} s"
        if isinstance(e, _Deadline):
            return "fallback", f"deadline of {self.cfg.timeout_s:g} s passed while streaming"
        if self._retryable(e):
            return "fallback", f"{type(e).__name__}: {e}"
        if isinstance(e, self._openai.APIStatusError):
            return "error", f"HTTP {e.status_code}: {e.message}"
        return "error", f"{type(e).__name__}: {e}"

    def _call(self, msgs, rid, t0, answers=None):
        cfg = self.cfg
        kw = {"model": cfg.model, "messages": msgs, "max_tokens": cfg.max_tokens, "temperature": cfg.temperature,
              "extra_headers": {_ID_HEADER: rid}, "extra_body": dict(cfg.extra_body) or None,
              "timeout": max(1e-3, cfg.timeout_s - (time.perf_counter() - t0))}
        if cfg.answer_format != "none" and answers:
            kw["response_format"] = response_format(cfg.answer_format, answers)
        if not cfg.stream:
            resp = self.client.chat.completions.create(**kw)
            text = resp.choices[0].message.content or ""
            u = resp.usage
            usage = (_server_usage(u) if u is not None else Usage(0, estimate_tokens(text), counted="estimate"))
            return text, usage, Timings(total_ms=1e3 * (time.perf_counter() - t0)).per_token(usage.completion_tokens)
        try:
            stream = self.client.chat.completions.create(
                stream=True, **kw, **({"stream_options": {"include_usage": True}} if self._usage_in_stream else {}))
        except self._openai.BadRequestError as e:
            if not self._usage_in_stream or "stream_options" not in str(e):
                raise
            self._usage_in_stream = False  # this server does not know stream_options: count tokens ourselves
            stream = self.client.chat.completions.create(stream=True, **kw)
        parts, usage, ttft, first, last, gaps = [], None, None, None, None, []
        deadline = t0 + cfg.timeout_s
        try:
            for chunk in stream:
                now = time.perf_counter()
                if now > deadline:
                    raise _Deadline()
                if chunk.usage is not None:
                    usage = _server_usage(chunk.usage)
                for choice in chunk.choices or ():
                    piece = choice.delta.content if choice.delta else None
                    if piece:
                        if ttft is None:
                            ttft, first = 1e3 * (now - t0), now
                        elif last is not None:
                            gaps.append(1e3 * (now - last))
                        last = now
                        parts.append(piece)
        finally:
            stream.close()
        text = "".join(parts)
        if usage is None:
            usage = Usage(0, estimate_tokens(text), counted="estimate")
        decode = 1e3 * (last - first) if first is not None else None
        return text, usage, Timings(ttft_ms=ttft, total_ms=1e3 * (time.perf_counter() - t0), inter_chunk_ms=gaps,
                                    decode_ms=decode).per_token(usage.completion_tokens)

    def close(self) -> None:
        self.client.close()


class _Deadline(Exception):
    pass
