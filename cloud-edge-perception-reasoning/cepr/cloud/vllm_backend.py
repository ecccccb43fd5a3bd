"""The ``vllm`` cloud backend: vLLM's offline engine (``vllm.LLM``) for batch runs, no HTTP server.

Where the engine runs:

* in this process when this python can import vllm (a GPU cluster's single environment) and no ``vllm_python``
  is set;
* otherwise in ONE long-lived worker subprocess started with vLLM's own python (``vllm_python``, else
  ``cepr.llm.vllm_env.find_vllm_python``): ``cepr/cloud/vllm_worker.py`` run by path, JSON lines over its
  stdin/stdout, the engine core inside it (``VLLM_ENABLE_V1_MULTIPROCESSING=0``). It is stopped by
  :meth:`VllmBackend.close` (and at exit), and stops itself when this process is gone.

Every request gets the same system prompt and user turn as the ``openai`` backend (a text-only user turn as one
string), rendered by the model's chat template inside vLLM (``LLM.chat``), and a greedy reply of at most
``max_tokens``. ``answer_format: json_schema`` (the default) constrains it with vLLM's structured outputs to the
answer JSON whose ``answer`` is an enum of the task's answers; ``none`` parses free text.

**Batches.** :meth:`VllmBackend.answer_batch` answers several requests with one ``LLM.chat`` call. The runner
calls :meth:`VllmBackend.infer` one sample at a time per thread; with ``cepr run --concurrency N`` the requests
that arrive while a batch runs are gathered (up to ``max_batch``) into the next one, so N samples in flight
become batches of up to N.

**What is reported.** Token counts are vLLM's (prompt and generated token ids). ``ttft_ms`` is vLLM's own
``first_token_latency``: from the request's arrival at vLLM's engine front end (after the chat template) to the
engine step that produced its first token; in a batch it includes the other prompts' prefill. ``total_ms`` is
from :meth:`infer` being called to the reply, so it includes waiting for a batch to form and to finish.
``decode_ms`` is vLLM's first token to last token, ``inter_token_ms`` that over the tokens after the first (per
token, also when a speculative step yields several). The last reply's full split (queued, prefill, decode) is in
:attr:`VllmBackend.last_metrics`. The speculative-decoding counters (``vllm:spec_decode_num_*`` from
``LLM.get_metrics()``) are in :meth:`VllmBackend.spec_counters`; acceptance is accepted / drafted tokens between two
readings (a cloud module reads them around every request, for the ``spec_acceptance`` metric).

Text only: a payload with an image is refused (image input is a later addition). Nothing is downloaded: the
model (and a LoRA adapter) must be local folders.
"""

from __future__ import annotations

import atexit
import collections
import importlib.util
import json
import logging
import os
import queue
import subprocess
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cepr.cloud.base import DEFAULT_SYSTEM_PROMPT
from cepr.cloud.openai_backend import answer_schema, build_messages
from cepr.cloud.parsing import AnswerParseError, parse_answer
from cepr.cloud.vllm_worker import Engine
from cepr.errors import CeprError
from cepr.llm.spec_config import parse_speculative
from cepr.llm.vllm_env import find_vllm_python
from cepr.records import CloudRequest, CloudResult, PayloadConfig, Timings, Usage
from cepr.servers.vllm_server import resolve_shipped_hf

log = logging.getLogger(__name__)
WORKER = Path(__file__).with_name("vllm_worker.py")
LOG_TAIL = 25


class VllmConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., description="a local Hugging Face model folder (causal LM with a chat template)")
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field(
        "float32", description="vLLM's --dtype (float32 matches the tiny models and other engines exactly)")
    max_model_len: int = Field(2048, gt=0, description="context length vLLM plans for (prompt + reply)")
    max_tokens: int = Field(128, gt=0, description="longest reply, in tokens")
    answer_format: Literal["json_schema", "none"] = Field(
        "json_schema", description="json_schema: vLLM's structured outputs keep the reply to the answer JSON with "
                                   "the task's answers as an enum; none: free text, parsed")
    compact_json: bool = Field(True, description="json_schema without optional whitespace between JSON tokens "
                                                 "(the engine's xgrammar with disable_any_whitespace), as cepr serve "
                                                 "vllm's --compact-json")
    speculative: dict | None = Field(
        None, description="vLLM's speculative_config, e.g. {method: ngram, num_speculative_tokens: 4, "
                          "prompt_lookup_max: 4} or {method: draft_model, model: DIR, num_speculative_tokens: 2}")
    vllm_python: str | None = Field(None, description="the python of vLLM's venv (default: see cepr.llm.vllm_env)")
    enable_lora: bool = Field(False, description="let the engine serve a LoRA adapter (implied by lora)")
    lora: str | None = Field(None, description="a local LoRA adapter folder (PEFT's adapter_config.json inside)")
    max_lora_rank: int | None = Field(None, gt=0, description="largest adapter rank (vLLM's default when unset)")
    enforce_eager: bool = Field(True, description="skip torch.compile and graph capture (faster start)")
    kv_cache_gib: int = Field(1, gt=0, description="KV cache on a CPU (VLLM_CPU_KVCACHE_SPACE), GiB")
    max_batch: int = Field(32, ge=1, description="most requests answered by one LLM.chat call")
    start_timeout_s: float = Field(300.0, gt=0, description="longest wait for the engine to load")
    timeout_s: float = Field(600.0, gt=0, description="longest wait for one batch; then the worker is stopped")
    payload: PayloadConfig = Field(default_factory=lambda: PayloadConfig(mode="summary"))

    @field_validator("speculative", mode="before")
    @classmethod
    def _speculative(cls, v):
        """Checked by cepr.llm.spec_config (methods, their keys, the draft folder) and turned into vLLM's mapping."""
        try:
            spec = parse_speculative(v)
        except CeprError as e:
            raise ValueError(str(e)) from None
        return None if spec is None else spec.vllm_config()


def _flat(messages: list[dict]) -> list[dict]:
    """Messages with each content as one string (vLLM renders text-only turns with the chat template)."""
    return [{"role": m["role"], "content": m["content"] if isinstance(m["content"], str) else
             "\n".join(p["text"] for p in m["content"] if p.get("type") == "text")} for m in messages]


class _Worker:
    """``vllm_worker.py`` in a subprocess of vLLM's python, one request at a time (the caller serialises)."""

    def __init__(self, python: str, settings: dict, env: dict, start_timeout_s: float):
        # vLLM's log: kept while the worker lives (its tail goes into error messages), removed at stop
        self.log = tempfile.NamedTemporaryFile("w+b", prefix="cepr-vllm-worker-", suffix=".log",  # noqa: SIM115
                                               delete=False)
        self.proc = subprocess.Popen([python, str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, env=env, start_new_session=True)  # Ctrl-C: the runner stops it
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, name="vllm-worker-out", daemon=True).start()
        self._next = 0
        self._send(settings)
        first = self._receive(start_timeout_s, "to load the model")
        if not first.get("ready"):
            tail = self.tail()
            self.stop()
            raise CeprError(f"vllm backend: vLLM could not load {settings['model']!r}: {first.get('error')}\n"
                            f"{tail}")
        self.version = first.get("vllm", "?")

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)  # the worker exited

    def _send(self, obj: dict) -> None:
        try:
            self.proc.stdin.write((json.dumps(obj) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise CeprError(f"vllm backend: the vLLM worker is gone (exit code {self.proc.poll()})\n{self.tail()}"
                            ) from None

    def _receive(self, timeout_s: float, what: str) -> dict:
        try:
            line = self.lines.get(timeout=timeout_s)
        except queue.Empty:
            tail = self.tail()
            self.stop()
            raise CeprError(f"vllm backend: vLLM took longer than {timeout_s:g} s {what}; worker stopped\n"
                            f"{tail}") from None
        if line is None:
            code = self.proc.wait(10)
            raise CeprError(f"vllm backend: the vLLM worker exited (code {code}) {what.replace('to ', 'before it could ')}"
                            f"\n{self.tail()}")
        return json.loads(line)

    def call(self, msg: dict, timeout_s: float) -> dict:
        self._next += 1
        self._send({**msg, "id": self._next})
        reply = self._receive(timeout_s, f"to answer ({msg['op']})")
        if not reply.get("ok"):
            raise CeprError(f"vllm backend: the vLLM worker failed: {reply.get('error')}")
        return reply

    def tail(self) -> str:
        """The worker's last stderr lines (vLLM's log), for error messages."""
        try:
            with open(self.log.name, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 65536))
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        lines = [x for x in text.splitlines() if x.strip()][-LOG_TAIL:]
        return "its last output:\n" + "\n".join(lines) if lines else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(b'{"op": "close"}\n')
                self.proc.stdin.flush()
                self.proc.stdin.close()
                self.proc.wait(15)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()
        try:
            os.unlink(self.log.name)
        except OSError:
            pass


class _InProcess:
    """The same engine in this process (vllm importable here)."""

    def __init__(self, settings: dict):
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(settings["kv_cache_gib"]))
        try:
            self.engine = Engine(settings)
        except Exception as e:  # noqa: BLE001 - vLLM raises many kinds
            raise CeprError(f"vllm backend: vLLM could not load {settings['model']!r}: {type(e).__name__}: {e}"
                            ) from None
        self.version = self.engine.version

    def call(self, msg: dict, timeout_s: float) -> dict:
        if msg["op"] == "chat":
            results = self.engine.chat(msg["conversations"], msg["schemas"], msg["max_tokens"])
            return {"ok": True, "results": results, "counters": self.engine.counters()}
        return {"ok": True, "counters": self.engine.counters()}

    def stop(self) -> None:
        self.engine = None


class VllmBackend:
    """Registered lazily as ``vllm`` in ``cepr.cloud.client``; see the module docstring."""

    name = "vllm"
    counted_by = "vLLM LLM.get_metrics() (vllm:spec_decode_*), before and after the test case"

    def __init__(self, config: dict | VllmConfig):
        self.cfg = config if isinstance(config, VllmConfig) else VllmConfig(**config)
        cfg = self.cfg
        if cfg.payload.sends_image:
            raise CeprError("cloudmodel: the vllm backend runs text-only models here (no image input yet): use "
                            "payload: summary")

        path = Path(resolve_shipped_hf(cfg.model)).expanduser()
        if not (path / "config.json").is_file():
            raise CeprError(f"cloudmodel: vllm model {cfg.model!r} is not a local Hugging Face folder (no "
                            "config.json); nothing is downloaded at run time")
        if cfg.lora and not (Path(cfg.lora).expanduser() / "adapter_config.json").is_file():
            raise CeprError(f"cloudmodel: vllm lora {cfg.lora!r} is not a LoRA adapter folder (no "
                            "adapter_config.json)")
        self.model_name = path.name
        self.model = str(path.resolve())
        settings = {"model": self.model, "dtype": cfg.dtype, "max_model_len": cfg.max_model_len,
                    "enforce_eager": cfg.enforce_eager, "speculative": cfg.speculative,
                    "enable_lora": cfg.enable_lora, "lora": str(Path(cfg.lora).expanduser()) if cfg.lora else None,
                    "max_lora_rank": cfg.max_lora_rank, "seed": 0, "kv_cache_gib": cfg.kv_cache_gib,
                    "compact_json": cfg.compact_json}
        if cfg.vllm_python is None and importlib.util.find_spec("vllm") is not None:
            self.where = "in-process"
            self.engine = _InProcess(settings)
        else:
            python = find_vllm_python(cfg.vllm_python)  # a CeprError naming the fix when there is none
            env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
                   "VLLM_CPU_KVCACHE_SPACE": str(cfg.kv_cache_gib), "PYTHONUNBUFFERED": "1"}
            env.pop("PYTHONPATH", None)  # the worker needs only vLLM's environment
            self.where = f"worker ({python})"
            self.engine = _Worker(python, settings, env, cfg.start_timeout_s)
        self.vllm_version = self.engine.version
        self.counters = {"drafts": 0, "draft_tokens": 0, "accepted_tokens": 0}
        self.last_metrics: dict | None = None  # vLLM's per-request timings of the last reply (vllm_worker)
        self.batch_sizes: collections.Counter = collections.Counter()  # batch size -> how many calls
        self._lock = threading.Lock()  # one engine call at a time
        self._queue: queue.Queue = queue.Queue()
        self._closed = False
        self._dispatcher = threading.Thread(target=self._dispatch, name="vllm-batcher", daemon=True)
        self._dispatcher.start()
        atexit.register(self.close)
        log.info("vllm backend: %s on vLLM %s (%s)", self.model_name, self.vllm_version, self.where)

    # -- batches ---------------------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        """Takes the first waiting request and every other one already waiting (up to max_batch) as one batch."""
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < self.cfg.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                batch.append(nxt)
            try:
                results = self.answer_batch([req for req, _, _ in batch], [t for _, _, t in batch])
            except Exception as e:  # noqa: BLE001 - each waiting caller gets it
                for _, fut, _ in batch:
                    fut.set_exception(e)
                continue
            for (_, fut, _), r in zip(batch, results, strict=True):
                fut.set_result(r)

    def infer(self, req: CloudRequest) -> CloudResult:
        if self._closed:
            raise CeprError("vllm backend: used after close()")
        fut: Future = Future()
        self._queue.put((req, fut, (time.time(), time.perf_counter())))
        return fut.result()

    def messages(self, req: CloudRequest) -> list[dict]:
        """The system prompt and user turn, as the openai backend sends them (text only, one string)."""
        return _flat(build_messages(self.cfg, req))

    def answer_batch(self, reqs: list[CloudRequest], started: list | None = None,
                     answer_format: str | None = None) -> list[CloudResult]:
        """Answers for ``reqs`` from one ``LLM.chat`` call, in order. ``started``: per request, the
        (time.time(), time.perf_counter()) it was asked at (default: now); ``answer_format``: this call's, instead
        of the settings' (json_schema or none)."""
        if not reqs:
            return []
        fmt = answer_format or self.cfg.answer_format
        if fmt not in ("json_schema", "none"):
            raise CeprError(f"vllm backend: answer_format must be json_schema or none, got {fmt!r}")
        now = (time.time(), time.perf_counter())
        started = started or [now] * len(reqs)
        convs = [self.messages(r) for r in reqs]
        schemas = [answer_schema(r.answers) if fmt == "json_schema" else None for r in reqs]
        with self._lock:
            reply = self.engine.call({"op": "chat", "conversations": convs, "schemas": schemas,
                                      "max_tokens": self.cfg.max_tokens}, self.cfg.timeout_s)
            self.counters = reply["counters"]
            self.batch_sizes[len(reqs)] += 1
        done = time.perf_counter()
        out = [self._result(r, conv, res, t, done) for r, conv, res, t in zip(reqs, convs, reply["results"],
                                                                               started, strict=True)]
        self.last_metrics = reply["results"][-1].get("metrics")
        return out

    def _result(self, req: CloudRequest, conv: list[dict], res: dict, started, done: float) -> CloudResult:
        up = len(json.dumps({"model": self.model_name, "messages": conv, "max_tokens": self.cfg.max_tokens}))
        total = 1e3 * (done - started[1])
        if "error" in res:
            return CloudResult("error", reason=f"vLLM: {res['error']}", timings=Timings(sent_at=started[0],
                               total_ms=total), bytes_up=up, model=self.model_name)
        text = res["text"]
        m = res.get("metrics") or {}
        timings = Timings(sent_at=started[0], total_ms=total,
                          ttft_ms=1e3 * m["ttft_s"] if m.get("ttft_s") is not None else None,
                          decode_ms=1e3 * m["decode_s"] if m.get("decode_s") is not None else None)
        usage = Usage(res["prompt_tokens"], res["completion_tokens"], counted="server")
        timings.per_token(usage.completion_tokens)
        try:
            answer, reason, conf = parse_answer(text, req.answers)
        except AnswerParseError as e:
            cut = " (cut off at max_tokens)" if res.get("finish_reason") == "length" else ""
            return CloudResult("error", reason=f"unparsable answer{cut}: {e}", raw_text=text, usage=usage,
                               timings=timings, bytes_up=up, bytes_down=len(text), model=self.model_name)
        return CloudResult("ok", answer, reason, conf, text, usage, timings, up, len(text), self.model_name)

    # -- speculative decoding ------------------------------------------------------------------------------------
    def spec_counters(self) -> dict:
        """``{"drafts", "draft_tokens", "accepted_tokens"}`` since the engine started (zeros without speculation);
        acceptance over a stretch is the accepted / drafted tokens between two readings."""
        with self._lock:
            self.counters = self.engine.call({"op": "counters"}, self.cfg.timeout_s)["counters"]
        return dict(self.counters)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._dispatcher.join(self.cfg.timeout_s)
        if self.batch_sizes:
            log.info("vllm backend: %d LLM.chat calls, batch size -> calls %s", sum(self.batch_sizes.values()),
                     dict(sorted(self.batch_sizes.items())))
        c = self.counters
        if c["draft_tokens"]:
            log.info("vllm backend: %d of %d draft tokens accepted (%.3f)", c["accepted_tokens"], c["draft_tokens"],
                     c["accepted_tokens"] / c["draft_tokens"])
        with self._lock:
            self.engine.stop()
        atexit.unregister(self.close)
