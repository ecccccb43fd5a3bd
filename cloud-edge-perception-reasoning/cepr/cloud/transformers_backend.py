"""The ``transformers`` cloud backend: a Hugging Face causal language model, or a vision-language model that takes
the camera image, in this process (torch on the CPU).

It builds the same chat messages as the ``openai`` backend (system prompt, question, allowed answers, summary
text and, with ``payload: summary+image`` or ``image``, the frame as an image part), renders them with the model's
chat template and either

* generates greedily up to ``max_tokens`` and parses the answer JSON from the text (``answer_format: none``), or
* scores each allowed answer's reply ``{"answer": "<a>"}`` by its teacher-forced log-probability and returns the
  most likely one, with its normalised probability as the confidence (``answer_format: choice``): the reply is
  always one of the allowed answers, as with a JSON-schema constrained server.

A folder whose config.json has a ``vision_config`` (a LLaVA-style model such as the tiny one of ``cepr models
tiny``) loads with ``AutoModelForImageTextToText`` and ``AutoProcessor``: the frame is encoded as the payload
settings say (resolution or scale, codec, quality), decoded back, so that the model sees what would go over the
wire, and handed to the processor. Other folders load with ``AutoModelForCausalLM``; they refuse a payload with an
image when the backend is configured. Only local folders load (``local_files_only``): nothing is downloaded at run
time. Token counts are the tokenizer's or processor's own (a VLM's prompt count includes the image's tokens);
``bytes_up`` is the rendered prompt as a JSON string plus the image's base64 data URL. Needs the llm extra
(transformers and torch).

``message_style: vlm`` (with ``payload: image``) sends what our own VLM (``cepr vlm train``) learned instead: one
user turn, the image then ``vlm_question(prompt, answers)``, no system prompt, summary or camera; choice scoring
then compares the trained replies' start up to the comma after the answer (``vlm_answer_prefix``).
"""

from __future__ import annotations

import base64
import copy
import json
import math
import time
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cepr.cloud.base import DEFAULT_SYSTEM_PROMPT
from cepr.cloud.openai_backend import build_messages, check_vlm_style
from cepr.cloud.parsing import AnswerParseError, parse_answer
from cepr.errors import CeprError
from cepr.llm.hf_cache import cache_keyword, output_cache
from cepr.llm.vlm import vlm_answer_prefix
from cepr.records import CloudRequest, CloudResult, PayloadConfig, Timings, Usage


class TransformersConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., description="a local Hugging Face model folder: a causal LM, or a vision-language model (config with a vision_config, e.g. the tiny LLaVA), with a chat template")
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    max_tokens: int = Field(128, gt=0)
    answer_format: Literal["none", "choice"] = "choice"
    threads: int = Field(1, ge=1, description="torch intra-op threads")
    payload: PayloadConfig = Field(default_factory=lambda: PayloadConfig(mode="summary"))
    message_style: Literal["chat", "vlm"] = Field(
        "chat", description="chat: system prompt, then the question, camera, summary and image; vlm: the one user "
                            "turn our own VLM (cepr vlm train) learned: the image, then the question with its "
                            "allowed answers (needs payload: image and a vision-language model folder)")

    @model_validator(mode="after")
    def _vlm_style(self):
        check_vlm_style(self)
        return self


class TransformersBackend:
    """Registered lazily as ``transformers`` in ``cepr.cloud.client`` (torch and transformers load on use)."""

    name = "transformers"

    def __init__(self, config: dict):
        self.cfg = TransformersConfig(**config)
        path = Path(self.cfg.model).expanduser()
        if not (path / "config.json").is_file():
            raise CeprError(f"cloudmodel: transformers model {self.cfg.model!r} is not a local Hugging Face folder "
                            "(no config.json); nothing is downloaded at run time")
        try:
            hf_config = json.loads((path / "config.json").read_text())
        except (OSError, ValueError) as e:
            raise CeprError(f"cloudmodel: transformers model {self.cfg.model!r}: unreadable config.json ({e})") from None
        self.vision = "vision_config" in hf_config
        if self.cfg.message_style == "vlm" and not self.vision:
            raise CeprError(f"cloudmodel: message_style: vlm sends the frame, but transformers model "
                            f"{self.cfg.model!r} is text-only (no vision_config in its config.json)")
        if self.cfg.payload.sends_image and not self.vision:
            raise CeprError(f"cloudmodel: transformers model {self.cfg.model!r} is text-only (no vision_config in "
                            f"its config.json) and takes no image: use payload: summary, or a vision-language "
                            f"model folder for payload: {self.cfg.payload.mode}")
        try:
            import torch
            import transformers
        except ImportError:
            raise CeprError("the transformers backend needs the llm extra: pip install -e '.[llm]'") from None
        torch.set_num_threads(self.cfg.threads)
        self.torch = torch
        self.processor = None
        if self.vision:
            self.processor = transformers.AutoProcessor.from_pretrained(path, local_files_only=True)
            if getattr(self.processor, "image_processor", None) is None:
                raise CeprError(f"cloudmodel: transformers model {self.cfg.model!r} has a vision_config but its "
                                "processor has no image processor (no processor_config.json/preprocessor_config.json)")
            self.tok = self.processor.tokenizer
            auto = transformers.AutoModelForImageTextToText
        else:
            self.tok = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
            auto = transformers.AutoModelForCausalLM
        self.model = auto.from_pretrained(path, local_files_only=True, dtype=torch.float32)
        self.model.eval()
        self.model_name = path.name
        self._cache_kw = cache_keyword(self.model)

    def _inputs(self, req: CloudRequest) -> tuple[dict, int]:
        """The model's inputs for a request (``input_ids``, and ``pixel_values`` etc. with an image) and the bytes
        the request would put on the wire (the rendered prompt as a JSON string, plus the image's data URL)."""
        msgs = build_messages(self.cfg, req)  # the same messages as over HTTP (message_style: vlm's one turn too)
        if self.processor is None:
            msgs = [{"role": m["role"], "content": m["content"] if isinstance(m["content"], str) else
                     "\n".join(p["text"] for p in m["content"] if p.get("type") == "text")} for m in msgs]
            ids = self.tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
            ids = list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
            return {"input_ids": self.torch.tensor([ids])}, len(json.dumps(self.tok.decode(ids)))
        text, images, urls = self._vlm_prompt(msgs)
        inputs = self.processor(text=text, images=images or None, return_tensors="pt")
        return dict(inputs), len(json.dumps(text)) + sum(len(u) for u in urls)

    def _vlm_prompt(self, msgs: list[dict]) -> tuple[str, list, list[str]]:
        """A VLM's prompt text (one image token per image part), the images (PIL) and their data URLs."""
        images, urls, turns = [], [], []
        for m in msgs:
            parts = [{"type": "text", "text": m["content"]}] if isinstance(m["content"], str) else m["content"]
            content = []
            for p in parts:
                if p["type"] == "image_url":  # the data URL the openai backend would send, decoded back
                    urls.append(p["image_url"]["url"])
                    images.append(_decode_data_url(urls[-1]))
                    content.append({"type": "image"})
                else:
                    content.append({"type": "text", "text": p["text"]})
            turns.append({"role": m["role"], "content": content})
        return self.processor.apply_chat_template(turns, add_generation_prompt=True, tokenize=False), images, urls

    def _prompt_ids(self, req: CloudRequest) -> list[int]:
        """The prompt's token ids (a VLM's include one per image token)."""
        return self._inputs(req)[0]["input_ids"][0].tolist()

    def _choice(self, inputs: dict, answers) -> tuple[str, float, list[int]]:
        """The allowed answer whose reply the model finds most likely, its normalised probability, its tokens."""
        probs, replies = self.choice_probs(inputs, answers)
        best = max(range(len(answers)), key=probs.__getitem__)
        return answers[best], probs[best], replies[best]

    def choice_probs(self, inputs: dict, answers) -> tuple[list[float], list[list[int]]]:
        """Each allowed answer's reply probability, normalised over the answers, and the replies' tokens."""
        torch = self.torch
        if self.cfg.message_style == "vlm":  # the trained replies' start, up to the comma after the answer

            texts = [vlm_answer_prefix(a) for a in answers]
        else:
            texts = [json.dumps({"answer": a}) for a in answers]
        replies = [self.tok.encode(t, add_special_tokens=False) for t in texts]
        with torch.no_grad():
            out = self.model(**inputs, use_cache=True)
            past = output_cache(out)
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
        return [x / sum(w) for x in w], replies

    def infer(self, req: CloudRequest) -> CloudResult:
        t0 = time.perf_counter()
        started = time.time()
        inputs, up = self._inputs(req)
        n_prompt = int(inputs["input_ids"].shape[1])
        if self.cfg.answer_format == "choice":
            answer, conf, reply = self._choice(inputs, req.answers)
            text = self.tok.decode(reply)
            usage = Usage(n_prompt, len(reply), counted="server")
            total = 1e3 * (time.perf_counter() - t0)
            return CloudResult("ok", answer, "most likely allowed answer", round(conf, 4), text, usage,
                               Timings(sent_at=started, total_ms=total), up, len(text), self.model_name)
        with self.torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=self.cfg.max_tokens, do_sample=False,
                                      pad_token_id=self.tok.pad_token_id)
        gen = out[0, n_prompt:].tolist()
        text = self.tok.decode(gen, skip_special_tokens=True)
        usage = Usage(n_prompt, len(gen), counted="server")
        timings = Timings(sent_at=started, total_ms=1e3 * (time.perf_counter() - t0))
        try:
            answer, reason, conf = parse_answer(text, req.answers)
        except AnswerParseError as e:
            return CloudResult("error", reason=f"unparsable answer: {e}", raw_text=text, usage=usage, timings=timings,
                               bytes_up=up, bytes_down=len(text), model=self.model_name)
        return CloudResult("ok", answer, reason, conf, text, usage, timings, up, len(text), self.model_name)

    def close(self) -> None:
        pass


def _decode_data_url(url: str):
    """The RGB image (PIL) a ``data:<mime>;base64,...`` URL carries: what the receiving server would decode."""
    from PIL import Image

    data = base64.b64decode(url.split(",", 1)[1])
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise CeprError("cloudmodel: the encoded payload image could not be decoded back")
    return Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
