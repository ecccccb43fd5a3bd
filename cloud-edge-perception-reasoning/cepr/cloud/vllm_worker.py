"""vLLM's offline engine (``vllm.LLM``) behind a small JSON-lines protocol: the ``vllm`` cloud backend's worker.

This file imports only the standard library at module level and vLLM inside :class:`Engine`, because it runs by
path with the python of vLLM's own virtual environment, where cepr is not installed::

    <vllm python> .../cepr/cloud/vllm_worker.py      # settings on the first stdin line, then one request a line

The ``vllm`` backend imports the same :class:`Engine` in its own process when that process can import vllm (a
GPU cluster's single environment).

Protocol (one JSON object per line; the worker's replies on its original stdout, everything vLLM prints goes to
stderr):

* first line in: the settings ``{"model", "dtype", "max_model_len", "enforce_eager", "speculative", "enable_lora",
  "lora", "max_lora_rank", "seed", "compact_json"}``; first line out: ``{"ready": true, "vllm": version, ...}`` or
  ``{"ready": false, "error": ...}``;
* ``{"op": "chat", "id", "conversations": [[message, ...], ...], "schemas": [schema | null, ...],
  "max_tokens"}`` -> ``{"id", "ok": true, "results": [...], "counters": {...}}``, one result per conversation, in
  order, from ONE ``LLM.chat`` call (a batch); a result is ``{"text", "prompt_tokens", "completion_tokens",
  "finish_reason", "metrics"}`` or ``{"error"}``;
* ``{"op": "counters", "id"}`` -> ``{"id", "ok": true, "counters": {...}}``; ``{"op": "close"}`` ends it.

The worker ends when its stdin closes or its parent process is gone (polled), so it never outlives the backend.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

# vLLM's speculative-decoding counters as ``LLM.get_metrics()`` names them (no ``_total`` suffix, unlike /metrics)
SPEC_COUNTERS = {
    "vllm:spec_decode_num_drafts": "drafts",
    "vllm:spec_decode_num_draft_tokens": "draft_tokens",
    "vllm:spec_decode_num_accepted_tokens": "accepted_tokens",
}


def request_metrics(m) -> dict | None:
    """What vLLM measured for one request (``RequestOutput.metrics``, a ``RequestStateStats``), in seconds:

    * ``ttft_s``: from the request's arrival at the engine's front end (after ``LLM.chat`` rendered its chat
      template) to the end of the engine step that produced its first token; in a batch this includes the
      other prompts' prefill;
    * ``queued_s``: waiting in the scheduler; ``prefill_s``: first scheduled to first token;
    * ``decode_s``: first token to last token; ``itl_s``: ``decode_s`` over the tokens after the first (the mean
      gap per token; with speculation one step yields several tokens, so this is per token, not per step).

    None when vLLM reports no metrics (stat logging off)."""
    if m is None or not hasattr(m, "first_token_latency"):
        return None
    n = int(getattr(m, "num_generation_tokens", 0))
    decode = max(0.0, m.last_token_ts - m.first_token_ts) if m.first_token_ts else 0.0
    return {"ttft_s": float(m.first_token_latency),
            "queued_s": max(0.0, m.scheduled_ts - m.queued_ts) if m.scheduled_ts else None,
            "prefill_s": max(0.0, m.first_token_ts - m.scheduled_ts) if m.first_token_ts and m.scheduled_ts else None,
            "decode_s": decode, "itl_s": decode / (n - 1) if n > 1 else None, "generated": n}


class Engine:
    """One ``vllm.LLM`` and what the backend asks of it: batched chats and the speculative counters."""

    def __init__(self, s: dict):
        import vllm
        from vllm import LLM, SamplingParams

        self.version = vllm.__version__
        self.SamplingParams = SamplingParams
        # constrained decoding's parameter class: StructuredOutputsParams (vLLM >= 0.11), GuidedDecodingParams before
        try:
            from vllm.sampling_params import StructuredOutputsParams

            kind, cls = "structured_outputs", StructuredOutputsParams
        except ImportError:  # pragma: no cover - older vLLM
            from vllm.sampling_params import GuidedDecodingParams

            kind, cls = "guided_decoding", GuidedDecodingParams
        self._constrain = lambda schema: {kind: cls(json=schema)}
        kw = {"model": s["model"], "dtype": s.get("dtype", "float32"), "max_model_len": int(s["max_model_len"]),
              "enforce_eager": bool(s.get("enforce_eager", True)), "seed": int(s.get("seed", 0)),
              "disable_log_stats": False}  # get_metrics() needs the stat loggers
        if s.get("compact_json", True):
            # no optional whitespace between JSON tokens (a weak model can fill its budget with blanks). An engine
            # setting (xgrammar; "auto" refuses it): vLLM 0.32's grammar back-ends ignore the per-request field
            kw["structured_outputs_config"] = {"backend": "xgrammar", "disable_any_whitespace": True}
        if s.get("speculative"):
            kw["speculative_config"] = dict(s["speculative"])
        if s.get("enable_lora") or s.get("lora"):
            kw["enable_lora"] = True
            if s.get("max_lora_rank"):
                kw["max_lora_rank"] = int(s["max_lora_rank"])
        self.llm = LLM(**kw)
        self.lora = None
        if s.get("lora"):
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("adapter", 1, s["lora"])

    def _params(self, schema, max_tokens: int):
        extra = self._constrain(schema) if schema else {}
        return self.SamplingParams(temperature=0.0, max_tokens=int(max_tokens), **extra)

    def chat(self, conversations: list, schemas: list, max_tokens: int) -> list[dict]:
        """Greedy replies to ``conversations`` in one ``LLM.chat`` call. If the batch fails (one prompt too long,
        say), each conversation is retried alone so that only the bad one reports the error."""
        params = [self._params(schema, max_tokens) for schema in schemas]
        try:
            outs = self.llm.chat(conversations, params, use_tqdm=False, lora_request=self.lora)
        except Exception as e:  # noqa: BLE001 - reported to the caller, per conversation
            if len(conversations) == 1:
                return [{"error": f"{type(e).__name__}: {e}"}]
            return [self.chat([c], [sch], max_tokens)[0] for c, sch in zip(conversations, schemas, strict=True)]
        results = []
        for o in outs:
            c = o.outputs[0]
            results.append({"text": c.text, "prompt_tokens": len(o.prompt_token_ids or ()),
                            "completion_tokens": len(c.token_ids), "finish_reason": c.finish_reason,
                            "metrics": request_metrics(getattr(o, "metrics", None))})
        return results

    def counters(self) -> dict:
        """vLLM's speculative-decoding counters since the engine started (zeros without speculation)."""
        out = dict.fromkeys(SPEC_COUNTERS.values(), 0)
        for m in self.llm.get_metrics():
            key = SPEC_COUNTERS.get(getattr(m, "name", ""))
            if key is not None and getattr(m, "value", None) is not None:
                out[key] += int(m.value)
        return out


def _watch_parent(parent: int, poll_s: float = 0.5) -> None:
    """End this process when the one that started it is gone (an orphan is re-parented)."""
    while os.getppid() == parent:
        time.sleep(poll_s)
    os._exit(0)


def main() -> int:
    # keep the protocol on a private copy of stdout; anything printed by vLLM or its libraries goes to stderr
    out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    threading.Thread(target=_watch_parent, args=(os.getppid(),), name="vllm-worker-parent", daemon=True).start()

    def send(obj: dict) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    first = sys.stdin.readline()
    if not first:
        return 0
    try:
        engine = Engine(json.loads(first))
    except Exception as e:  # noqa: BLE001 - the parent shows it
        send({"ready": False, "error": f"{type(e).__name__}: {e}"})
        return 1
    send({"ready": True, "vllm": engine.version, "pid": os.getpid()})
    for line in sys.stdin:
        if not line.strip():
            continue
        msg = json.loads(line)
        op, rid = msg.get("op"), msg.get("id")
        if op == "close":
            break
        try:
            if op == "chat":
                results = engine.chat(msg["conversations"], msg["schemas"], msg["max_tokens"])
                send({"id": rid, "ok": True, "results": results, "counters": engine.counters()})
            elif op == "counters":
                send({"id": rid, "ok": True, "counters": engine.counters()})
            else:
                send({"id": rid, "ok": False, "error": f"unknown op {op!r}"})
        except Exception as e:  # noqa: BLE001 - the parent shows it
            send({"id": rid, "ok": False, "error": f"{type(e).__name__}: {e}"})
    return 0


if __name__ == "__main__":
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine core in this process, no spawn
    sys.exit(main())
