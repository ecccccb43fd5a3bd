"""``message_style: vlm``: the cloud backends send our own VLM (``cepr vlm train``) the one prompt it learned (a
user turn of the image, then the question with its allowed answers; no system prompt, summary or camera).

Unit tests build the messages and check the settings; the slow ones train a tiny VLM a few steps and ask it through
llama.cpp's server (``cepr serve llamacpp --model vlm-f32.gguf --mmproj mmproj-f32.gguf``) with the openai
backend, and in transformers with the transformers backend, checking that both engines see the training prompt."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from pydantic import ValidationError

from cepr.cloud.openai_backend import OpenAIBackendConfig, build_messages
from cepr.errors import CeprError
from cepr.records import CloudRequest, PayloadConfig

PROMPT = "Is there a person or vehicle in the path within 6 m?"


def _request(image=True, **kw) -> CloudRequest:
    rgb = np.random.default_rng(3).integers(0, 256, (24, 32, 3), dtype=np.uint8) if image else None
    return CloudRequest(task="path_hazard", prompt=PROMPT, answers=("yes", "no"), summary={"objects": []},
                        image=rgb, camera={"fx": 100.0}, key="k1", **kw)


def _cfg(**kw) -> OpenAIBackendConfig:
    return OpenAIBackendConfig(**{"model": "m", "message_style": "vlm", "payload": PayloadConfig(mode="image"),
                                  **kw})


def test_vlm_style_is_one_user_turn_image_first_then_the_question():
    from cepr.llm.vlm import vlm_question

    msgs = build_messages(_cfg(), _request())
    assert [m["role"] for m in msgs] == ["user"]  # no system message
    image, text = msgs[0]["content"]  # nothing else: no summary, no camera
    assert image["type"] == "image_url" and image["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert text == {"type": "text", "text": vlm_question(PROMPT, ("yes", "no"))}
    assert text["text"] == f"{PROMPT} Allowed answers: yes, no."  # one space, not the chat style's newline
    png = build_messages(_cfg(payload=PayloadConfig(mode="image", codec="png")), _request())
    assert png[0]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")  # the payload's codec
    chat = build_messages(OpenAIBackendConfig(model="m", payload=PayloadConfig(mode="image")), _request())
    assert [m["role"] for m in chat] == ["system", "user"]  # the default style is unchanged


def test_vlm_style_needs_the_image():
    with pytest.raises(CeprError, match="message_style: vlm needs the frame.*carries no image"):
        build_messages(_cfg(), _request(image=False))
    for mode in ("summary", "summary+image"):
        with pytest.raises(ValidationError, match="set payload: image"):
            _cfg(payload=PayloadConfig(mode=mode))
    with pytest.raises(ValidationError, match="content_format must be parts"):
        _cfg(content_format="string")
    with pytest.raises(ValidationError):
        _cfg(message_style="llava")


def test_the_cloud_module_takes_message_style_and_checks_it_up_front():
    from cepr.cloud.module import CloudModule

    base = {"backend": "openai", "base_url": "http://127.0.0.1:1/v1", "model": "m", "payload": "image"}
    CloudModule.check_hyperparameters(**base, message_style="vlm")
    with pytest.raises(CeprError, match="(?s)bad backend settings.*set payload: image"):
        CloudModule.check_hyperparameters(**{**base, "payload": "summary+image"}, message_style="vlm")
    with pytest.raises(CeprError, match="server: llamacpp needs server_mmproj"):
        CloudModule.check_hyperparameters(backend="openai", base_url="auto", server="llamacpp",
                                          server_model="x.gguf", payload="image", message_style="vlm")
    with pytest.raises(CeprError, match="(?s)bad backend settings.*set payload: image"):
        CloudModule.check_hyperparameters(backend="transformers", model="x", message_style="vlm")


# ---- real engines on a tiny VLM trained a few steps ----------------------------------------------------------

_LLM = [m for m in ("torch", "transformers", "tokenizers", "gguf", "safetensors", "llama_cpp", "sse_starlette")
        if importlib.util.find_spec(m) is None]
engines = pytest.mark.skipif(bool(_LLM), reason=f"needs the llm and serve extras (missing {_LLM})")


@pytest.fixture(scope="module")
def vlm_run(tiny_data, tmp_path_factory):
    from cepr.training.vlm_train import VlmTrainConfig, train

    out = tmp_path_factory.mktemp("vlm-style") / "run"
    train(VlmTrainConfig(data=str(tiny_data), out=str(out), size="tiny", frames=1, steps=3, warmup=0, lr=3e-3,
                         val_every=100, val_frames=1, checkpoint_every=100, threads=1, quant=("f32",),
                         progress=False), log=lambda *_: None)
    return out


@pytest.fixture(scope="module")
def frames(tiny_data):
    from cepr.data.cloud_robotics import CloudRoboticsDataset, find_index

    ds = CloudRoboticsDataset(find_index(tiny_data, split="val"))
    return [ds[i].rgb for i in range(2)]


@pytest.fixture(scope="module")
def server(vlm_run):
    pytest.importorskip("llama_cpp.mtmd_cpp", reason="needs llama-cpp-python built with libmtmd")
    from cepr.servers.autoserve import LlamaCppServer

    srv = LlamaCppServer(str(vlm_run / "vlm-f32.gguf"), n_ctx=1024, mmproj=str(vlm_run / "mmproj-f32.gguf"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def processor(vlm_run):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(str(vlm_run / "hf"), local_files_only=True)


def _requests(frames):
    from cepr.data.tasks import TASK_NAMES, get_task

    return [CloudRequest(task=t, prompt=get_task(t).render_prompt(), answers=get_task(t).answers, image=rgb,
                         key=f"{t}-{i}") for i, rgb in enumerate(frames) for t in TASK_NAMES]


@engines
@pytest.mark.slow
def test_llama_cpp_renders_the_training_prompt(vlm_run, processor, frames):
    """The GGUF's chat template, given our messages as llama-cpp-python's multimodal handler hands them over (image
    parts as its media marker), renders exactly the prompt cepr vlm train trained on."""
    import llama_cpp
    import llama_cpp.mtmd_cpp as mtmd
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter, MTMDChatHandler

    from cepr.training.vlm_train import prompt_text

    llm = llama_cpp.Llama(model_path=str(vlm_run / "vlm-f32.gguf"), vocab_only=True, verbose=False)
    try:
        template = llm.metadata["tokenizer.chat_template"]
    finally:
        llm.close()
    marker = mtmd.mtmd_default_marker().decode()
    fmt = Jinja2ChatFormatter(template, eos_token="", bos_token="")
    cfg = _cfg(payload=PayloadConfig(mode="image", codec="png"))
    for req in _requests(frames[:1]):
        msgs = [MTMDChatHandler._convert_message_for_template(m, marker) for m in build_messages(cfg, req)]
        rendered = fmt(messages=msgs).prompt
        assert rendered.count(marker) == 1
        assert rendered.replace(marker, processor.image_token) == prompt_text(processor, req.task), req.task


@engines
@pytest.mark.slow
def test_openai_backend_asks_the_vlm_behind_llama_cpp(server, processor, frames):
    from cepr.cloud.client import create_backend
    from cepr.training.vlm_train import prompt_text

    statuses = {}
    for answer_format in ("json_object", "none"):
        b = create_backend("openai", {"base_url": server.url, "model": server.model_id(), "stream": False,
                                      "max_tokens": 256, "timeout_s": 60, "answer_format": answer_format,
                                      "message_style": "vlm", "payload": PayloadConfig(mode="image", codec="png")})
        try:
            for req in _requests(frames):
                r = b.infer(req)
                statuses.setdefault(answer_format, []).append(r.status)
                if r.status == "ok":
                    assert r.answer in req.answers, (req.task, r)
                else:  # the current contract: a reply without a usable answer is an error result, not a crash
                    assert r.status == "error" and r.reason.startswith("unparsable answer"), (req.task, r)
                # the server's prompt is the training prompt: same length as transformers' (image tokens included)
                ids = processor(text=prompt_text(processor, req.task), images=_pil(req.image),
                                return_tensors="np")["input_ids"][0]
                assert r.usage.counted == "server" and r.usage.prompt_tokens == len(ids), (req.task, r.usage)
        finally:
            b.close()
    assert set(statuses["json_object"]) == {"ok"}, statuses  # constrained to the answer JSON: always usable
    print({k: {s: v.count(s) for s in set(v)} for k, v in statuses.items()})


def _pil(rgb):
    from PIL import Image

    return Image.fromarray(rgb)


@engines
@pytest.mark.slow
def test_transformers_backend_asks_the_vlm_with_the_training_prompt(vlm_run, processor, frames):
    from cepr.cloud.client import create_backend
    from cepr.training.vlm_train import prompt_text

    reqs = _requests(frames[:1])
    for answer_format in ("choice", "none"):
        b = create_backend("transformers", {"model": str(vlm_run / "hf"), "answer_format": answer_format,
                                            "max_tokens": 64, "threads": 2, "message_style": "vlm",
                                            "payload": PayloadConfig(mode="image", codec="png")})
        for req in reqs if answer_format == "choice" else reqs[:1]:
            text, images, _ = b._vlm_prompt(build_messages(b.cfg, req))
            assert text == prompt_text(processor, req.task) and len(images) == 1
            r = b.infer(req)
            if answer_format == "choice" or r.status == "ok":
                assert r.status == "ok" and r.answer in req.answers, (req.task, r)
            else:
                assert r.status == "error" and r.reason.startswith("unparsable answer"), (req.task, r)
    with pytest.raises(CeprError, match="carries no image"):
        b.infer(CloudRequest(task="path_hazard", prompt=PROMPT, answers=("yes", "no")))


@engines
@pytest.mark.slow
def test_cloud_only_job_asks_the_vlm_with_message_style_vlm(tiny_data, vlm_run, processor, tmp_path):
    """The keys of docs/backends.md's snippet in a job's cloud.yaml: cepr starts the server, sends the frames."""
    pytest.importorskip("llama_cpp.mtmd_cpp", reason="needs llama-cpp-python built with libmtmd")
    from cepr.data.tasks import get_task
    from cepr.training.vlm_train import prompt_text
    from helpers import run_one_algorithm

    lines = run_one_algorithm(tmp_path, tiny_data, "cloud-only",
                              cloud={"server": "llamacpp", "server_model": str(vlm_run / "vlm-f32.gguf"),
                                     "server_mmproj": str(vlm_run / "mmproj-f32.gguf"), "payload": "image",
                                     "message_style": "vlm", "timeout_s": 60.0, "max_tokens": 256,
                                     "stream": False})
    assert len(lines) == 3
    for rec in lines:
        c = rec["cloud"]
        assert c["status"] == "ok" and c["cloud_answer"] in get_task(rec["task"]).answers, c
        assert c["payload"]["mode"] == "image" and c["bytes_up"] > 1000, c  # the frame went up
        # the training prompt, not the chat one (system prompt, summary): the processor's count, image included
        ids = processor(text=prompt_text(processor, rec["task"]), images=_pil(np.zeros((8, 8, 3), np.uint8)),
                        return_tensors="np")["input_ids"][0]
        assert c["prompt_tokens"] == len(ids), c
