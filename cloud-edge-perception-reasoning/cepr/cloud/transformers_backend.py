"""The ``transformers`` cloud backend: a Hugging Face causal language model in this process (torch on the CPU).

It builds the same chat messages as the ``openai`` backend (system prompt, question, allowed answers, summary
text), renders them with the model's chat template and either

* generates greedily up to ``max_tokens`` and parses the answer JSON from the text (``answer_format: none``), or
* scores each allowed answer's reply ``{"answer": "<a>"}`` by its teacher-forced log-probability and returns the
  most likely one, with its normalised probability as the confidence (``answer_format: choice``): the reply is
  always one of the allowed answers, as with a JSON-schema constrained server.

Only local folders load (``local_files_only``): nothing is downloaded at run time. Token counts are the
tokenizer's own. Text only: a model that takes images is a later addition, so a payload with an image is refused
when the backend is configured. Needs the llm extra (transformers and torch).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from cepr.cloud.base import DEFAULT_SYSTEM_PROMPT, CloudRequest
from cepr.cloud.payload import PayloadConfig
from cepr.cloud.result import CloudResult, Timings, Usage
from cepr.errors import CeprError


class TransformersConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., description="a local Hugging Face model folder (causal LM with a chat template)")
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    max_tokens: int = Field(128, gt=0)
    answer_format: Literal["none", "choice"] = "choice"
    threads: int = Field(1, ge=1, description="torch intra-op threads")
    payload: PayloadConfig = Field(default_factory=lambda: PayloadConfig(mode="summary"))


class TransformersBackend:
    """Registered lazily as ``transformers`` in ``cepr.cloud.client`` (torch and transformers load on use)."""

    name = "transformers"

    def __init__(self, config: dict):
        self.cfg = TransformersConfig(**config)
        if self.cfg.payload.sends_image:
            raise CeprError("cloudmodel: the transformers backend runs text-only models here: use payload: summary")
        path = Path(self.cfg.model).expanduser()
        if not (path / "config.json").is_file():
            raise CeprError(f"cloudmodel: transformers model {self.cfg.model!r} is not a local Hugging Face folder "
                            "(no config.json); nothing is downloaded at run time")
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            raise CeprError("the transformers backend needs the llm extra: pip install -e '.[llm]'") from None
        torch.set_num_threads(self.cfg.threads)
        self.torch = torch
        self.tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, torch_dtype=torch.float32)
        self.model.eval()
        self.model_name = path.name
        import inspect

        # the keyword that hands a forward pass its KV cache (transformers 5.x renames past_key_values to cache)
        params = inspect.signature(self.model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    def _prompt_ids(self, req: CloudRequest) -> list[int]:
        from cepr.cloud.openai_backend import build_messages

        msgs = build_messages(self.cfg, req)  # the same system prompt and user turn as over HTTP
        msgs = [{"role": m["role"], "content": m["content"] if isinstance(m["content"], str) else
                 "\n".join(p["text"] for p in m["content"] if p.get("type") == "text")} for m in msgs]
        ids = self.tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)

    def _choice(self, prompt: list[int], answers) -> tuple[str, float, list[int]]:
        """The allowed answer whose reply the model finds most likely, its normalised probability, its tokens."""
        import copy

        torch = self.torch
        replies = [self.tok.encode(json.dumps({"answer": a}), add_special_tokens=False) for a in answers]
        with torch.no_grad():
            out = self.model(torch.tensor([prompt]), use_cache=True)
            past = getattr(out, "past_key_values", None) or getattr(out, "cache", None)
            first = out.logits[0, -1:]  # the prompt once; its last logits predict r[0]
            scores = []
            for r in replies:  # teacher-forced: each reply continues a copy of the cached prompt
                steps = first
                if len(r) > 1:  # feeding r[:-1] gives the logits that predict r[1:]
                    more = self.model(torch.tensor([r[:-1]]), **{self._cache_kw: copy.deepcopy(past)}).logits[0]
                    steps = torch.cat([first, more])
                lp = torch.log_softmax(steps.float(), dim=-1)
                scores.append(float(lp[torch.arange(len(r)), torch.tensor(r)].sum()))
        m = max(scores)
        w = [math.exp(s - m) for s in scores]
        best = max(range(len(answers)), key=lambda i: w[i])
        return answers[best], w[best] / sum(w), replies[best]

    def infer(self, req: CloudRequest) -> CloudResult:
        from cepr.cloud.parsing import AnswerParseError, parse_answer

        t0 = time.perf_counter()
        started = time.time()
        prompt = self._prompt_ids(req)
        up = len(json.dumps(self.tok.decode(prompt)))
        if self.cfg.answer_format == "choice":
            answer, conf, reply = self._choice(prompt, req.answers)
            text = self.tok.decode(reply)
            usage = Usage(len(prompt), len(reply), counted="server")
            total = 1e3 * (time.perf_counter() - t0)
            return CloudResult("ok", answer, "most likely allowed answer", round(conf, 4), text, usage,
                               Timings(sent_at=started, total_ms=total), up, len(text), self.model_name)
        with self.torch.no_grad():
            out = self.model.generate(self.torch.tensor([prompt]), max_new_tokens=self.cfg.max_tokens,
                                      do_sample=False, pad_token_id=self.tok.pad_token_id)
        gen = out[0, len(prompt):].tolist()
        text = self.tok.decode(gen, skip_special_tokens=True)
        usage = Usage(len(prompt), len(gen), counted="server")
        timings = Timings(sent_at=started, total_ms=1e3 * (time.perf_counter() - t0))
        try:
            answer, reason, conf = parse_answer(text, req.answers)
        except AnswerParseError as e:
            return CloudResult("error", reason=f"unparsable answer: {e}", raw_text=text, usage=usage, timings=timings,
                               bytes_up=up, bytes_down=len(text), model=self.model_name)
        return CloudResult("ok", answer, reason, conf, text, usage, timings, up, len(text), self.model_name)

    def close(self) -> None:
        pass
