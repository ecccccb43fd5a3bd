"""The `transformers` cloud backend on the tiny LLaVA of `cepr models tiny` (a local Hugging Face VLM folder):
the frame reaches the model (its tokens, its effect on the choice), choice scoring over the cached prompt equals
uncached forward passes, and a cloud-only job answers with payload summary+image."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cepr.records import CloudRequest

SUMMARY = {"image": [640, 480], "distances": "depth", "risk": 0.4, "uncertainty": 0.1, "corridor_m": [0.6, 1.2],
           "free_m": [None, 3.2, None], "object_fields": ["class", "distance_m"], "objects": [["person", 3.2]],
           "objects_omitted": 0}
ANSWERS = ("go", "slow", "stop", "avoid_left", "avoid_right")


@pytest.fixture(scope="module")
def vlm(tiny_llm):
    m = tiny_llm["manifest"]
    d = tiny_llm["dir"]
    return {"hf": d / m["files"]["vlm_hf"], "gguf": d / m["files"]["vlm_f32"], "mmproj": d / m["files"]["vlm_mmproj"],
            "image_tokens": m["models"]["vlm"]["image_tokens"], "size": m["models"]["vlm"]["vision"]["image_size"]}


def _images(size: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {"noise": rng.integers(0, 256, (120, 160, 3), dtype=np.uint8),
            "flat": np.full((120, 160, 3), (200, 30, 90), np.uint8)}


def _request(image):
    return CloudRequest(task="action", prompt="What should the robot do?", answers=ANSWERS, summary=SUMMARY,
                        image=image, key="s1")


def _backend(vlm, mode="summary+image", **extra):
    from cepr.cloud.client import create_backend
    from cepr.records import PayloadConfig

    # PNG at the projector's size: the model sees exactly the pixels sent
    payload = PayloadConfig(mode=mode, codec="png", resolution=f"{vlm['size']}x{vlm['size']}")
    return create_backend("transformers", {"model": str(vlm["hf"]), "payload": payload, **extra})


@pytest.fixture(scope="module")
def backend(vlm):
    return _backend(vlm)


def test_the_image_reaches_the_choice(backend, vlm):
    imgs = _images(vlm["size"])
    probs = {}
    for name, img in imgs.items():
        r = backend.infer(_request(img))
        assert r.status == "ok" and r.answer in ANSWERS
        inputs, _ = backend._inputs(_request(img))
        p, _ = backend.choice_probs(inputs, ANSWERS)
        assert math.isclose(sum(p), 1.0, abs_tol=1e-9)
        assert r.answer == ANSWERS[int(np.argmax(p))] and math.isclose(r.confidence, max(p), abs_tol=1e-4)
        assert r.usage.prompt_tokens == inputs["input_ids"].shape[1] and r.bytes_up > 0
        probs[name] = p
    again, _ = backend.choice_probs(backend._inputs(_request(imgs["noise"]))[0], ANSWERS)
    assert again == probs["noise"]  # the same image: the same probabilities
    assert max(abs(a - b) for a, b in zip(probs["noise"], probs["flat"], strict=True)) > 1e-6
    # the image's tokens are in the prompt count; without the image the same model still answers
    text_only = _backend(vlm, mode="summary")
    r = text_only.infer(_request(imgs["noise"]))
    assert r.status == "ok" and r.answer in ANSWERS
    with_image = backend.infer(_request(imgs["noise"]))
    assert with_image.usage.prompt_tokens - r.usage.prompt_tokens == vlm["image_tokens"]


def test_choice_equals_uncached_forward_passes(backend, vlm):
    import json

    import torch

    req = _request(_images(vlm["size"])["noise"])
    inputs, _ = backend._inputs(req)
    probs, _ = backend.choice_probs(inputs, ANSWERS)
    prompt = inputs["input_ids"][0].tolist()
    scores = []
    for a in ANSWERS:  # one full forward pass (image included) per reply, no cache
        reply = backend.tok.encode(json.dumps({"answer": a}), add_special_tokens=False)
        full = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
        with torch.no_grad():
            logits = backend.model(input_ids=torch.tensor([prompt + reply]), **full).logits[0]
        lp = torch.log_softmax(logits[len(prompt) - 1:-1].float(), dim=-1)
        scores.append(float(lp[torch.arange(len(reply)), torch.tensor(reply)].sum()))
    m = max(scores)
    ref = [math.exp(s - m) for s in scores]
    ref = [p / sum(ref) for p in ref]
    assert max(abs(a - b) for a, b in zip(probs, ref, strict=True)) < 1e-4


def test_choice_agrees_with_llama_cpp_on_a_square_image(backend, vlm):
    """The same chat prompt and PNG (square, the projector's size: neither engine resizes) scored by llama.cpp
    (the F32 decoder GGUF + mmproj): the answers' probabilities agree up to ggml's float16 GELU table."""
    pytest.importorskip("llama_cpp.mtmd_cpp", reason="needs llama-cpp-python built with libmtmd (0.3.36)")
    import base64

    import llama_cpp

    from cepr.cloud.openai_backend import build_messages
    from cepr.llm.mtmd import VisionProjector

    size = vlm["size"]
    img = np.random.default_rng(5).integers(0, 256, (size, size, 3), dtype=np.uint8)
    req = _request(img)
    inputs, _ = backend._inputs(req)
    probs, replies = backend.choice_probs(inputs, ANSWERS)
    text, _pil, urls = backend._vlm_prompt(build_messages(backend.cfg, req))
    png = base64.b64decode(urls[0].split(",", 1)[1])  # the bytes the wire would carry
    llm = llama_cpp.Llama(model_path=str(vlm["gguf"]), n_ctx=1024, n_threads=1, n_threads_batch=1, verbose=False,
                          logits_all=False, type_k=0, type_v=0)
    vp = VisionProjector(llm, vlm["mmproj"])
    try:
        vp.eval(text.replace(backend.processor.image_token, vp.marker), [png])
        n = llm.n_tokens
        assert n == inputs["input_ids"].shape[1]  # the same sequence: the image token expands to the patches

        def log_softmax():
            z = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
            z = z.astype(np.float64) - z.max()
            return z - math.log(np.exp(z).sum())

        first, scores = log_softmax(), []
        for reply in replies:
            llm.n_tokens, lp, score = n, first, 0.0
            for i, t in enumerate(reply):
                score += float(lp[t])
                if i + 1 < len(reply):
                    llm.eval([t])
                    lp = log_softmax()
            scores.append(score)
    finally:
        vp.close()
        llm.close()
    m = max(scores)
    ref = [math.exp(s - m) for s in scores]
    ref = [p / sum(ref) for p in ref]
    diff = max(abs(a - b) for a, b in zip(probs, ref, strict=True))
    print(f"max |p_transformers - p_llama.cpp| = {diff:.2e}")
    assert int(np.argmax(probs)) == int(np.argmax(ref)) and diff < 1e-3, (probs, ref)  # measured 8.4e-6


def test_free_generation_with_an_image(vlm):
    b = _backend(vlm, mode="image", answer_format="none", max_tokens=8)
    r = b.infer(_request(_images(vlm["size"])["noise"]))
    assert r.status in ("ok", "error") and 0 < r.usage.completion_tokens <= 8
    if r.status == "error":  # random weights write nonsense: reported, never a crash
        assert "unparsable" in r.reason


def test_cloud_only_job_sends_the_image_to_the_vlm(vlm, tiny_data, tmp_path):
    from cepr.data.tasks import get_task
    from helpers import run_one_algorithm

    lines = run_one_algorithm(tmp_path, tiny_data, "cloud-only", replace_cloud=True,
                              cloud={"backend": "transformers", "model": str(vlm["hf"]), "payload": "summary+image",
                                     "resolution": f"{vlm['size']}x{vlm['size']}", "link": "4g"})
    assert len(lines) == 3
    for rec in lines:
        assert rec["cloud"]["status"] == "ok" and rec["cloud"]["cloud_answer"] in get_task(rec["task"]).answers
        assert rec["cloud"]["model"] == "hf" and rec["cloud"]["tokens_counted"] == "server"
