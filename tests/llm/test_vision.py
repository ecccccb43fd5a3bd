"""Image input through a llama.cpp vision projector, on the tiny LLaVA of `cepr models tiny`: the mmproj GGUF our
converter writes loads in libmtmd, the image reaches the model (its tokens, its effect on the logits), the
conversion agrees with transformers, and the server, a cloud-only job and the edge reasoner take images.

vLLM is not tested here: the CPU wheel's tests (test_vllm_*) are text-only (see docs/llm.md, "Image input")."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import numpy as np
import pytest

from cepr.errors import CeprError

pytest.importorskip("llama_cpp", reason="needs the llm extra (pip install -e '.[llm]')")
pytest.importorskip("llama_cpp.mtmd_cpp", reason="needs llama-cpp-python built with libmtmd (0.3.36)")

QUESTION = "<|user|>\n{image}What is in front of the robot?</s>\n<|assistant|>\n"


@pytest.fixture(scope="module")
def vlm(tiny_llm):
    d = tiny_llm["dir"]
    m = tiny_llm["manifest"]
    return {"hf": d / m["files"]["vlm_hf"], "gguf": d / m["files"]["vlm_f32"], "q8_0": d / m["files"]["vlm_q8_0"],
            "mmproj": d / m["files"]["vlm_mmproj"], "image_tokens": m["models"]["vlm"]["image_tokens"],
            "size": m["models"]["vlm"]["vision"]["image_size"]}


def _images(size: int) -> dict[str, np.ndarray]:
    """Square images of the projector's size (no resize in either engine), and one of another shape."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:size, 0:size]
    return {"noise": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
            "ramp": np.stack([x * 255 // size, y * 255 // size, (x + y) * 127 // size], -1).astype(np.uint8),
            "flat": np.full((size, size, 3), (200, 30, 90), np.uint8),
            "wide": rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)}


@pytest.fixture(scope="module")
def engine(vlm):
    """The decoder in llama.cpp (F32 weights and KV cache) with the projector; logits of the last position."""
    import llama_cpp

    from cepr.llm.mtmd import VisionProjector, encode_png

    llm = llama_cpp.Llama(model_path=str(vlm["gguf"]), n_ctx=512, n_threads=1, n_threads_batch=1, verbose=False,
                          logits_all=False, type_k=0, type_v=0)
    vp = VisionProjector(llm, vlm["mmproj"])

    def run(image: np.ndarray | bytes | None, text: str = QUESTION):
        llm.n_tokens = 0
        if image is None:
            llm.eval(llm.tokenize(text.format(image="").encode(), add_bos=True, special=True))
            counts = None
        else:
            data = image if isinstance(image, bytes) else encode_png(image)
            counts = vp.eval(text.format(image=vp.marker), [data])
        z = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),)).copy()
        return llm.n_tokens, counts, z

    return run


def test_the_mmproj_gguf_carries_llama_cpp_clip_keys_and_tensor_names(vlm):
    import gguf

    r = gguf.GGUFReader(str(vlm["mmproj"]))

    def val(key):
        f = r.fields[key]
        return f.contents()

    assert val("general.architecture") == "clip" and val("clip.projector_type") == "mlp"
    assert val("clip.has_vision_encoder") is True and val("clip.use_gelu") is True
    assert val("clip.vision.image_size") == vlm["size"] and val("clip.vision.projection_dim") == 64
    assert val("clip.vision.feature_layer") == [val("clip.vision.block_count")]  # HF's -1: every layer runs
    names = {t.name for t in r.tensors}
    assert {"v.patch_embd.weight", "v.patch_embd.bias", "v.position_embd.weight", "mm.0.weight", "mm.2.bias",
            "v.blk.0.attn_q.weight", "v.blk.1.ffn_down.weight"} <= names
    assert not any(n.startswith(("blk.", "token_embd", "v.post_ln")) for n in names)


def test_the_image_takes_its_tokens_and_changes_the_logits(engine, vlm):
    imgs = _images(vlm["size"])
    n_text, _, z_text = engine(None)
    n, counts, z0 = engine(imgs["noise"])
    assert counts.images == 1 and counts.image_tokens == vlm["image_tokens"] == 16
    assert n == n_text + vlm["image_tokens"] == counts.total
    _, _, z0_again = engine(imgs["noise"])
    _, _, z1 = engine(imgs["ramp"])
    _, _, z_wide = engine(imgs["wide"])  # another shape: padded to a square and resized by libmtmd
    assert np.array_equal(z0, z0_again)  # same image, same logits
    assert np.abs(z0 - z1).max() > 0.5 and np.abs(z0 - z_text).max() > 0.5 and np.abs(z0 - z_wide).max() > 0.5
    assert len({int(z.argmax()) for z in (z0, z1, z_text)}) > 1  # and the greedy token moves


def test_a_corrupt_image_is_a_clear_error(engine):
    with pytest.raises(CeprError, match="could not decode these 13 bytes as an image"):
        engine(b"garbage bytes")
    png = _png_bytes()
    with pytest.raises(CeprError, match="could not decode"):
        engine(png[: len(png) // 3])  # a truncated PNG


def _png_bytes() -> bytes:
    from cepr.llm.mtmd import encode_png

    return encode_png(_images(64)["noise"])


def test_converter_refuses_what_llama_cpp_would_compute_differently(vlm, tmp_path):
    import shutil

    from cepr.llm.vlm import export_mmproj

    with pytest.raises(CeprError, match="no config.json"):
        export_mmproj(tmp_path, tmp_path / "x.gguf")
    hf = tmp_path / "hf"
    shutil.copytree(vlm["hf"], hf)
    cfg = json.loads((hf / "config.json").read_text())
    for change, msg in (({"vision_feature_select_strategy": "default"}, "one token per patch"),
                        ({"projector_hidden_act": "relu"}, "tanh GELU"),
                        ({"model_type": "llama"}, "written for llava")):
        (hf / "config.json").write_text(json.dumps({**cfg, **change}))
        with pytest.raises(CeprError, match=msg):
            export_mmproj(hf, tmp_path / "x.gguf")
    from cepr.llm.mtmd import mmproj_path

    with pytest.raises(CeprError, match="vision projector 'nope.gguf' not found"):
        mmproj_path("nope.gguf")


def test_llama_cpp_agrees_with_transformers_on_the_same_image_and_prompt(engine, vlm):
    """The LLM work's stretch goal for our VLM: next-token logits of the HF LLaVA folder and of the GGUF decoder
    + mmproj, on square images of the projector's size (no resizing, so both engines normalise the same
    pixels). The difference comes from ggml's GELU (a float16 table); the text alone agrees to float32."""
    import torch
    from PIL import Image
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    proc = AutoProcessor.from_pretrained(vlm["hf"])
    model = LlavaForConditionalGeneration.from_pretrained(vlm["hf"]).eval()
    worst = 0.0
    for name, img in _images(vlm["size"]).items():
        if name == "wide":
            continue  # HF resizes it without padding, llama.cpp pads to a square first: not the same pixels
        inp = proc(images=Image.fromarray(img), text=QUESTION.format(image="<image>"), return_tensors="pt")
        with torch.no_grad():
            zh = model(**inp).logits[0, -1].numpy()
        n, _, zl = engine(img)
        assert inp["input_ids"].shape[1] == n  # same sequence: the image token expands to the patches
        scale = float(np.abs(zh).max())
        worst = max(worst, float(np.abs(zh - zl).max()) / scale)
        assert int(zh.argmax()) == int(zl.argmax()), name
    assert worst < 2e-3, worst  # measured 3.5e-4 (max |diff| 3.3e-3 on logits of about +-10)
    ids = proc.tokenizer(QUESTION.format(image=""))["input_ids"]
    with torch.no_grad():
        zh = model(input_ids=torch.tensor([ids])).logits[0, -1].numpy()
    _, _, zl = engine(None)
    assert np.abs(zh - zl).max() < 1e-4 * np.abs(zh).max()


# ---- the server, a cloud job, the edge reasoner ----------------------------------------------------------------

@pytest.fixture(scope="module")
def server(vlm):
    pytest.importorskip("sse_starlette", reason="llama.cpp's server needs the llm extra's server packages")
    from cepr.servers.autoserve import llamacpp_server

    return llamacpp_server(str(vlm["gguf"]), mmproj=str(vlm["mmproj"]), n_ctx=1024)


def _chat(url: str, content, **kw):
    body = {"model": "m", "messages": [{"role": "user", "content": content}], "max_tokens": 6, "temperature": 0,
            **kw}
    req = urllib.request.Request(f"{url}/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


@pytest.mark.slow
def test_the_server_takes_image_url_parts(server, vlm, engine):
    from cepr.llm.mtmd import encode_png

    imgs = _images(vlm["size"])
    q = {"type": "text", "text": "What is in front of the robot?"}
    code, text_only = _chat(server.url, [q])
    assert code == 200
    # the chat template renders QUESTION; one <s> (the template has none, the tokenizer adds it)
    assert text_only["usage"]["prompt_tokens"] == engine(None)[0]
    replies = {}
    for name in ("noise", "ramp", "noise"):
        code, r = _chat(server.url, [{"type": "image_url", "image_url": {"url": _uri(encode_png(imgs[name]))}}, q])
        assert code == 200, r
        assert r["usage"]["prompt_tokens"] == text_only["usage"]["prompt_tokens"] + vlm["image_tokens"]
        replies.setdefault(name, set()).add(r["choices"][0]["message"]["content"])
    assert len(replies["noise"]) == 1 and replies["noise"] != replies["ramp"]  # greedy: the image decides
    code, r = _chat(server.url, [{"type": "image_url", "image_url": {"url": _uri(b"garbage bytes")}}, q])
    assert code == 400 and "messages[0].content[0]: 13 bytes that do not decode as an image" in r["error"]["message"]
    code, r = _chat(server.url, [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}, q])
    assert code == 400 and "not valid base64" in r["error"]["message"]


@pytest.mark.slow
def test_the_openai_backend_sends_the_image_as_parts_and_the_server_counts_its_tokens(server, vlm):
    from cepr.cloud.client import create_backend
    from cepr.records import CloudRequest, PayloadConfig

    img = _images(96)["noise"]  # another size: the server resizes it to the projector's
    req = CloudRequest(task="path_hazard", prompt="Is there a person or vehicle in the path within 6 m?",
                       answers=("yes", "no"), summary={"objects": [["person", 3.2]]}, image=img, key="k")
    tokens, answers = {}, {}
    for mode in ("summary", "summary+image"):
        b = create_backend("openai", {"base_url": server.url, "model": server.model_id(), "stream": False,
                                      "max_tokens": 160, "content_format": "parts", "answer_format": "json_object",
                                      "timeout_s": 60, "payload": PayloadConfig(mode=mode, codec="png")})
        r = b.infer(req)
        assert r.usage.counted == "server"
        tokens[mode] = r.usage.prompt_tokens
        answers[mode] = r.answer
    assert tokens["summary+image"] == tokens["summary"] + vlm["image_tokens"], tokens
    assert answers["summary+image"] in ("yes", "no")


@pytest.mark.slow
def test_cloud_only_job_on_the_tiny_vlm_behind_llamacpp_with_images(tiny_data, vlm, tmp_path):
    pytest.importorskip("sse_starlette", reason="llama.cpp's server needs the llm extra's server packages")
    from cepr.data.tasks import get_task
    from helpers import run_one_algorithm

    lines = run_one_algorithm(tmp_path, tiny_data, "cloud-only",
                              cloud={"server": "llamacpp", "server_model": str(vlm["gguf"]),
                                     "server_mmproj": str(vlm["mmproj"]), "payload": "summary+image",
                                     "timeout_s": 60.0, "max_tokens": 160, "stream": False})
    assert len(lines) == 3
    for rec in lines:
        c = rec["cloud"]
        assert c["status"] == "ok" and c["model"] == vlm["gguf"].name, c
        assert c["cloud_answer"] in get_task(rec["task"]).answers
        assert c["prompt_tokens"] > vlm["image_tokens"] and c["bytes_up"] > 1000, c  # the frame went up


def test_server_mmproj_is_checked_up_front(vlm):
    from cepr.cloud.module import CloudModule
    from cepr.edge.module import EdgeModule

    with pytest.raises(CeprError, match="only apply to server: llamacpp"):
        CloudModule.check_hyperparameters(server_mmproj=str(vlm["mmproj"]))
    with pytest.raises(CeprError, match="cloudmodel: vision projector 'missing.gguf' not found"):
        CloudModule.check_hyperparameters(server="llamacpp", server_model=str(vlm["gguf"]),
                                          server_mmproj="missing.gguf")
    with pytest.raises(CeprError, match="only apply to reasoner: llamacpp"):
        EdgeModule.check_hyperparameters(llm_mmproj=str(vlm["mmproj"]))
    with pytest.raises(CeprError, match="llm_mmproj: vision projector 'missing.gguf' not found"):
        EdgeModule.check_hyperparameters(reasoner="llamacpp", llm_mmproj="missing.gguf")


@pytest.fixture(scope="module")
def frames(tiny_data):
    from cepr.data.cloud_robotics import CloudRoboticsDataset, find_index
    from cepr.data.tasks import camera_for
    from cepr.edge.summary import summarize

    out = []
    for s in list(CloudRoboticsDataset(find_index(tiny_data, split="test")))[:2]:
        h, w = s.label.shape
        out.append((summarize(s.label, s.depth, camera_for(s.sidecar, w, h)), s.rgb))
    return out


def test_the_edge_reasoner_reads_the_frame_with_llm_mmproj(vlm, frames):
    from cepr.data.tasks import TASK_NAMES
    from cepr.edge.reasoners import create_reasoner

    r = create_reasoner("llamacpp", llm_model=str(vlm["gguf"]), llm_mmproj=str(vlm["mmproj"]))
    assert r.wants_image
    (summary, rgb), (_, other_rgb) = frames
    seen = {}
    for name, image in (("frame", rgb), ("other", other_rgb), ("frame again", rgb)):
        answers = r.answer(summary, image=image)
        assert set(answers) == set(TASK_NAMES)
        for a in answers.values():
            assert abs(sum(a.distribution.values()) - 1.0) < 1e-9 and a.answer in a.distribution
            assert a.features["image"] is True
        seen[name] = {t: a.features["logprobs"] for t, a in answers.items()}
    assert seen["frame"] == seen["frame again"] and seen["frame"] != seen["other"]
    with pytest.raises(CeprError, match="no vision projector"):
        create_reasoner("llamacpp", llm_model=str(vlm["gguf"])).answer(summary, image=rgb)


@pytest.mark.slow
def test_edge_only_job_with_the_tiny_vlm_reading_frames(tiny_data, vlm, tmp_path):
    from helpers import run_one_algorithm

    lines = run_one_algorithm(tmp_path, tiny_data, "edge-only",
                              edge={"reasoner": "llamacpp", "llm_model": str(vlm["gguf"]),
                                    "llm_mmproj": str(vlm["mmproj"])})
    assert len(lines) == 3
    for rec in lines:
        assert rec["edge"]["answer"] in rec["edge"]["distribution"], rec["edge"]
        assert abs(sum(rec["edge"]["distribution"].values()) - 1) < 1e-3
