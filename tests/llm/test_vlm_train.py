"""`cepr vlm train`: the tiny preset trains a few steps on the test frames, the loss falls,
--resume continues the same run, the Hugging Face folder loads in transformers, and its GGUF + mmproj in llama.cpp
score the allowed answers like transformers; bad inputs give errors that name the problem."""

from __future__ import annotations

import importlib.util
import io
import json
import math

import numpy as np
import pytest

_MISSING = [m for m in ("torch", "transformers", "tokenizers", "gguf", "safetensors", "llama_cpp")
            if importlib.util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(bool(_MISSING), reason=f"needs the llm extra (missing {_MISSING})")


def _cfg(data, out, **kw):
    from cepr.training.vlm_train import VlmTrainConfig

    base = {"data": str(data), "out": str(out), "size": "tiny", "frames": 1, "steps": 3, "warmup": 0, "lr": 3e-3,
            "val_every": 100, "val_frames": 1, "checkpoint_every": 2, "threads": 2, "quant": ("f32",),
            "progress": False}
    return VlmTrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    from cepr.training.vlm_train import train

    out = tmp_path_factory.mktemp("vlm") / "run"
    first = train(_cfg(tiny_data, out), log=lambda *_: None)
    lines = []
    second = train(_cfg(tiny_data, out, steps=6), resume=True, log=lines.append)
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    return {"out": out, "first": first, "second": second, "resume_lines": lines, "log": log}


def test_loss_goes_down_and_resume_continues(trained):
    steps = [r for r in trained["log"] if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 7))  # 3 steps, then 3 more after --resume
    assert trained["first"]["steps"] == 3 and trained["second"]["steps"] == 6
    assert any("resuming at step 3" in x for x in trained["resume_lines"])
    losses = [r["loss"] for r in steps]
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0], losses  # one frame, seen every step: the loss must fall
    vals = [r for r in trained["log"] if "val_loss" in r]
    assert [v["step"] for v in vals] == [3, 6] and all(0 <= v["val_acc"] <= 1 for v in vals)
    assert vals[-1]["val_loss"] < vals[0]["val_loss"], vals


def _square_frame(tiny_data, size):
    from PIL import Image

    from cepr.data.cloud_robotics import CloudRoboticsDataset, find_index

    s = CloudRoboticsDataset(find_index(tiny_data, split="val"))[0]
    img = Image.fromarray(s.rgb).resize((size, size))  # the projector's size: neither engine resizes
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return img, buf.getvalue()


def test_exports_load_in_transformers_and_llama_cpp_and_agree(trained, tiny_data):
    pytest.importorskip("llama_cpp.mtmd_cpp", reason="needs llama-cpp-python built with libmtmd")
    import llama_cpp
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from cepr.data.tasks import TASK_NAMES, get_task
    from cepr.llm.mtmd import VisionProjector
    from cepr.training.vlm_train import answer_prefix, choice_scores, prompt_text

    out = trained["out"]
    model = AutoModelForImageTextToText.from_pretrained(str(out / "hf"), dtype=torch.float32).eval()
    proc = AutoProcessor.from_pretrained(str(out / "hf"))
    size = model.config.vision_config.image_size
    img, png = _square_frame(tiny_data, size)
    llm = llama_cpp.Llama(model_path=str(out / "vlm-f32.gguf"), n_ctx=1024, n_threads=1, n_threads_batch=1,
                          verbose=False, type_k=0, type_v=0)
    vp = VisionProjector(llm, out / "mmproj-f32.gguf")

    def log_softmax():
        z = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
        z = z.astype(np.float64) - z.max()
        return z - math.log(np.exp(z).sum())

    worst = 0.0
    try:
        for task in TASK_NAMES:
            opts = get_task(task).answers
            hf = choice_scores(model, proc, img, task)
            llm.n_tokens = 0
            vp.eval(prompt_text(proc, task).replace(proc.image_token, vp.marker), [png])
            n, first, cpp = llm.n_tokens, log_softmax(), []
            for o in opts:
                toks = llm.tokenize(answer_prefix(o).encode(), add_bos=False, special=False)
                llm.n_tokens, lp, score = n, first, 0.0
                for i, t in enumerate(toks):
                    score += float(lp[t])
                    if i + 1 < len(toks):
                        llm.eval([t])
                        lp = log_softmax()
                cpp.append(score)
            best_hf, best_cpp = (opts[int(np.argmax(s))] for s in (hf, cpp))
            assert best_hf == best_cpp and best_cpp in opts, (task, hf, cpp)
            worst = max(worst, *(abs(a - b) for a, b in zip(hf, cpp)))
            assert worst < 0.05, (task, hf, cpp)
    finally:
        vp.close()
        llm.close()
    print(f"max |log p_transformers - log p_llama.cpp| over the answers = {worst:.2e}")


def test_bad_inputs_name_the_problem(trained, tiny_data, tmp_path):
    from pydantic import ValidationError

    from cepr.cli import main
    from cepr.errors import CeprError
    from cepr.training.vlm_train import VlmTrainConfig, train

    with pytest.raises(CeprError, match="no checkpoint"):
        train(_cfg(tiny_data, tmp_path / "fresh"), resume=True)
    with pytest.raises(CeprError, match="already holds a checkpoint"):
        train(_cfg(tiny_data, trained["out"]))
    with pytest.raises(CeprError, match="settings differ.*lr"):
        train(_cfg(tiny_data, trained["out"], lr=1e-2, steps=7), resume=True)
    with pytest.raises(CeprError, match="nowhere"):
        train(_cfg(tmp_path / "nowhere", tmp_path / "x"))
    with pytest.raises(ValidationError):
        VlmTrainConfig(out="x", size="huge")
    assert main(["vlm", "train", "--out", str(tmp_path / "y"), "--steps", "0"]) == 2


def test_without_a_val_split_train_frames_are_held_out(tiny_data, tmp_path):
    from cepr.data.cloud_robotics import find_index
    from cepr.training.vlm_train import Frames

    index = find_index(tiny_data, split="train")  # an index file: no val split beside it
    frames = Frames(_cfg(index, tmp_path / "h", frames=6, val_frames=2))
    assert frames.val_source == "2 held-out train frames" and frames.val is frames.train
    assert len(frames.order) == 4 and not set(frames.order) & set(frames.val_order)


def _hf_scores(out, image, task):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from cepr.training.vlm_train import choice_scores

    model = AutoModelForImageTextToText.from_pretrained(str(out / "hf"), dtype=torch.float32).eval()
    proc = AutoProcessor.from_pretrained(str(out / "hf"))
    return choice_scores(model, proc, image, task)


def test_edge_reasoner_asks_our_vlm_as_it_was_trained(trained, tiny_data):
    """reasoner: llamacpp on the trained VLM picks the vlm prompt by itself (a cepr-vlm-* GGUF), resizes the full
    frame as training's processor does, and its option log-probabilities are transformers' on the same frame."""
    pytest.importorskip("llama_cpp.mtmd_cpp", reason="needs llama-cpp-python built with libmtmd")
    from PIL import Image

    from cepr.data.cloud_robotics import CloudRoboticsDataset, find_index
    from cepr.data.tasks import TASK_NAMES, camera_for, get_task
    from cepr.edge.reasoners import create_reasoner
    from cepr.edge.summary import summarize
    from cepr.errors import CeprError

    out = trained["out"]
    s = CloudRoboticsDataset(find_index(tiny_data, split="test"))[0]
    h, w = s.label.shape
    summary = summarize(s.label, s.depth, camera_for(s.sidecar, w, h))
    r = create_reasoner("llamacpp", llm_model=str(out / "vlm-f32.gguf"), llm_mmproj=str(out / "mmproj-f32.gguf"))
    assert r.prompt_style == "vlm" and r.wants_image and r.image_size == 64
    answers = r.answer(summary, image=s.rgb)  # the full frame: the reasoner resizes it
    assert set(answers) == set(TASK_NAMES)
    worst = 0.0
    for t, a in answers.items():
        assert a.answer in get_task(t).answers and abs(sum(a.distribution.values()) - 1) < 1e-9
        hf = _hf_scores(out, Image.fromarray(s.rgb), t)
        cpp = [a.features["logprobs"][o] for o in get_task(t).answers]
        worst = max(worst, *(abs(x - y) for x, y in zip(hf, cpp)))
        assert get_task(t).answers[int(np.argmax(hf))] == a.answer, (t, hf, cpp)
    assert worst < 0.05, worst
    print(f"edge reasoner vs transformers on a full frame: max |log p difference| = {worst:.2e}")
    with pytest.raises(CeprError, match="needs the frame's image"):
        r.answer(summary)
    with pytest.raises(CeprError, match="set llm_mmproj"):
        create_reasoner("llamacpp", llm_model=str(out / "vlm-f32.gguf"))
    assert create_reasoner("llamacpp", llm_model=str(out / "vlm-f32.gguf"),
                           llm_prompt="summary").prompt_style == "summary"


def test_q4_0_export_loads_and_answers_within_the_allowed(trained, tiny_data, tmp_path):
    pytest.importorskip("llama_cpp.mtmd_cpp", reason="needs llama-cpp-python built with libmtmd")
    import gguf

    from cepr.data.cloud_robotics import CloudRoboticsDataset, find_index
    from cepr.data.tasks import camera_for, get_task
    from cepr.edge.reasoners import create_reasoner
    from cepr.edge.summary import summarize
    from cepr.llm.gguf_export import export_gguf

    out = trained["out"]
    q4 = export_gguf(out / "hf", tmp_path / "vlm-q4_0.gguf", "q4_0", name="cepr-vlm-q4")
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(q4)).tensors}
    assert types["blk.0.attn_q.weight"] == "Q4_0" and types["blk.0.ffn_down.weight"] == "Q4_0"
    assert types["token_embd.weight"] == "Q8_0" and types["output.weight"] == "Q8_0"
    assert types["blk.0.attn_norm.weight"] == "F32"
    assert q4.stat().st_size < (out / "vlm-f32.gguf").stat().st_size / 3
    s = CloudRoboticsDataset(find_index(tiny_data, split="test"))[0]
    h, w = s.label.shape
    summary = summarize(s.label, s.depth, camera_for(s.sidecar, w, h))
    answers = create_reasoner("llamacpp", llm_model=str(q4), llm_mmproj=str(out / "mmproj-f32.gguf")).answer(
        summary, image=s.rgb)
    assert all(a.answer in get_task(t).answers for t, a in answers.items())


def test_auto_size_and_device():
    import torch

    from cepr.errors import CeprError
    from cepr.training.vlm_train import presets, resolve_device_and_size

    if torch.cuda.is_available():
        assert resolve_device_and_size("auto", "auto") == ("cuda", "large")
    else:
        assert resolve_device_and_size("auto", "auto") == ("cpu", "small")
        with pytest.raises(CeprError, match="torch sees no CUDA GPU"):
            resolve_device_and_size("cuda", "auto")
    assert resolve_device_and_size("cpu", "base") == ("cpu", "base")
    # every width a multiple of 32 (GGUF blocks) and the ViT's FFN != hidden (llama.cpp's projector swap)
    for text, vision in presets().values():
        assert all(x % 32 == 0 for x in (text.hidden, text.ffn, vision.hidden, vision.ffn))
        assert vision.ffn != vision.hidden and vision.image_size % vision.patch_size == 0


def test_learning_rate_warms_up_holds_then_decays_with_the_clock():
    from cepr.training.vlm_train import MIN_LR_RATIO, VlmTrainConfig, _lr

    c = VlmTrainConfig(out="x", lr=1e-3, warmup=10, max_minutes=10, decay_fraction=0.2)
    assert _lr(c, 0) == 1e-4 and _lr(c, 9) == 1e-3  # warm-up
    assert _lr(c, 500, 7.9 * 60) == 1e-3  # stable until the last 20% of the budget
    mid, end = _lr(c, 500, 9 * 60), _lr(c, 500, 10 * 60)
    assert 1e-3 > mid > end and abs(end - 1e-3 * MIN_LR_RATIO) < 1e-12 and _lr(c, 500, 11 * 60) == end
    assert _lr(c.model_copy(update={"decay_fraction": 0.0}), 500, 10 * 60) == 1e-3
    cool = c.model_copy(update={"decay_fraction": 1.0})
    assert _lr(cool, 500, 0) == 1e-3 and _lr(cool, 500, 5 * 60) < 1e-3  # a cool-down run decays throughout
    assert "decay_fraction" not in c.training_key()  # a --resume may cool a run down


def test_curves_table_from_the_log(trained, tmp_path, capsys):
    from cepr.cli import main
    from cepr.errors import CeprError
    from cepr.training.vlm_train import curves

    rows = curves(trained["out"], every=3)
    assert [r["steps"] for r in rows] == ["1-3", "4-6"]
    assert [r["val_loss"] for r in rows] == [v["val_loss"] for v in trained["log"] if "val_loss" in v]
    assert all(r["loss"] > 0 for r in rows) and 0 <= rows[0]["step_minutes"] <= rows[1]["step_minutes"]
    assert main(["vlm", "curves", str(trained["out"]), "--every", "3"]) == 0
    assert "| 4-6 |" in capsys.readouterr().out
    with pytest.raises(CeprError, match="not a `cepr vlm train` output"):
        curves(tmp_path)


def test_answer_weight_covers_the_answer_prefix(tiny_data):
    import torch

    from cepr.training.vlm_train import Frames, answer_prefix, batch, build_model, target_loss

    frames = Frames(_cfg(tiny_data, "unused", frames=2))
    model, proc, _ = build_model("tiny", 0)
    image, answers, _ = frames.train_item(0)
    enc = batch(proc, image, answers, answer_weight=10.0)
    for i, t in enumerate(answers):
        heavy = enc["input_ids"][i][enc["weights"][i] == 10.0]
        assert proc.tokenizer.decode(heavy) == answer_prefix(answers[t])
        assert torch.equal(enc["weights"][i] > 0, enc["labels"][i] != -100)
    with torch.no_grad():
        plain = target_loss(model, batch(proc, image, answers)).item()
        ones = target_loss(model, batch(proc, image, answers, answer_weight=1.0)).item()
        heavy = target_loss(model, batch(proc, image, answers, answer_weight=10.0)).item()
    assert abs(plain - ones) < 1e-5 and heavy != ones
