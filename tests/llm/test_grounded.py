"""The grounded VLM: vision tokens from the segmentation pass, the numpy projector, the features output of the
shipped models, and a tiny model trained for a few steps on cached tokens, then scored by `cepr vlm eval`."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from cepr.llm.grounded import GRID, Projector, depth_figures, option_probabilities, pool_grid, vision_tokens


def test_pool_grid_is_the_mean_of_each_adaptive_cell():
    x = np.arange(2 * 5 * 7, dtype=np.float32).reshape(2, 5, 7)
    got = pool_grid(x, (2, 3))
    # rows [0, 3) and [2, 5); columns [0, 3), [2, 5), [4, 7): adaptive pooling's overlapping bounds
    assert got.shape == (6, 2)
    np.testing.assert_allclose(got[0], x[:, 0:3, 0:3].mean(axis=(1, 2)))
    np.testing.assert_allclose(got[4], x[:, 2:5, 2:5].mean(axis=(1, 2)))
    np.testing.assert_allclose(got[5], x[:, 2:5, 4:7].mean(axis=(1, 2)))
    with pytest.raises(Exception, match="cannot be pooled"):
        pool_grid(x, (6, 8))


def test_depth_figures_mean_min_and_valid_share():
    d = np.zeros((40, 40), np.float32)
    d[:20, :20] = 4.0
    d[:20, 20:] = 50.0  # beyond the scale: clipped to 1
    d[0:4, 0:4] = 2.0  # the nearest return of the first cell (seen at a quarter of the resolution)
    got = depth_figures(d, (2, 2))
    assert got[0, 1] == pytest.approx(2.0 / 20) and got[0, 2] == pytest.approx(1.0)
    assert got[1, 0] == 1.0 and got[1, 1] == 1.0
    assert np.all(got[2:] == 0)  # no return at all below: zeros
    assert np.all(depth_figures(None, (2, 2)) == 0)


def test_vision_tokens_layout():
    rng = np.random.default_rng(0)
    feats, logits = rng.standard_normal((16, 8, 10)), rng.standard_normal((30, 60, 80))
    t = vision_tokens(feats, logits, None)
    assert t.shape == (GRID[0] * GRID[1], 16 + 30 + 3) and t.dtype == np.float32
    np.testing.assert_allclose(t[:, 16:46].sum(1), 1.0, atol=1e-5)  # pooled probabilities stay a distribution


def test_option_probabilities_are_a_tempered_softmax():
    p = option_probabilities([2.0, 0.0, -1.0], 2.0)
    z = np.exp(np.array([1.0, 0.0, -0.5]))
    np.testing.assert_allclose(p, z / z.sum())


def test_shipped_models_give_features_in_the_same_pass_without_changing_a_logit():
    from cepr.edge.models import model_path
    from cepr.edge.runtime import SegmentationModel

    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    depth = rng.uniform(0.5, 20, (480, 640)).astype(np.float32)
    for name, channels, grid in (("edge-int8", 128, (8, 10)), ("edge-rgb-int8", 128, (8, 10)),
                                 ("edge-fp32", 128, (8, 10)), ("cloud", 256, (15, 20))):
        m = SegmentationModel(model_path(name))
        assert m.has_features, name
        feed = m.prepare(rgb, depth if m.use_depth else None)
        logits, feats = m.run_with_features(feed)
        assert np.array_equal(logits, m.run(feed)), name  # bit for bit
        assert feats.shape == (channels, *grid), (name, feats.shape)


def test_projector_matches_the_trained_torch_module():
    torch = pytest.importorskip("torch")
    from cepr.training.grounded_train import GroundedModel

    class _Dec(torch.nn.Module):  # only the width is read from the decoder here
        config = type("C", (), {"hidden_size": 24})

    torch.manual_seed(0)
    m = GroundedModel(13, _Dec())
    x = torch.randn(5, 13)
    with torch.no_grad():
        want = m.project(x).numpy()
    p = Projector({"norm.weight": m.norm.weight.detach().numpy(), "norm.bias": m.norm.bias.detach().numpy(),
                   "fc1.weight": m.fc1.weight.detach().numpy(), "fc1.bias": m.fc1.bias.detach().numpy(),
                   "fc2.weight": m.fc2.weight.detach().numpy(), "fc2.bias": m.fc2.bias.detach().numpy()})
    np.testing.assert_allclose(p(x.numpy()), want, atol=1e-5)
    with pytest.raises(Exception, match="takes 13"):
        p(np.zeros((2, 12)))


def test_mcnemar_and_temperature_fit():
    from cepr.training.grounded_eval import mcnemar_p

    a = [True] * 10 + [False] * 2
    b = [False] * 10 + [True] * 2
    # 10 vs 2 discordant pairs: 2 * P(X <= 2), X ~ Binomial(12, 1/2)
    assert mcnemar_p(a, b) == pytest.approx(2 * (1 + 12 + 66) / 4096)
    assert mcnemar_p(a, a) == 1.0


@pytest.fixture(scope="module")
def features(tiny_data, tmp_path_factory):
    from cepr.training.grounded_train import extract_features

    out = tmp_path_factory.mktemp("grounded")
    train = extract_features(str(tiny_data), "train", "edge-int8", progress=False).save(out / "train.npz")
    val = extract_features(str(tiny_data), "val", "edge-int8", progress=False).save(out / "val.npz")
    return out, train, val


def test_features_file_holds_tokens_truth_and_the_planners_answers(features):
    from cepr.data.tasks import TASK_NAMES
    from cepr.training.grounded_train import FeatureSet

    _, train, _ = features
    fs = FeatureSet.load(train)
    assert fs.tokens.shape[1:] == (GRID[0] * GRID[1], 128 + 30 + 3) and fs.tokens.dtype == np.float16
    assert len(fs.truth) == len(fs.baseline) == len(fs.summaries) == len(fs) > 0
    assert all(set(t) == set(TASK_NAMES) for t in fs.truth + fs.baseline)
    assert fs.meta["encoder"] == "edge-int8" and fs.meta["depth"] is True
    assert json.loads(fs.summaries[0])["image"]


@pytest.fixture(scope="module")
def built(tiny_data, tmp_path_factory):
    """A tiny grounded VLM built by ``cepr vlm build``'s function on the tiny set (6 steps), installed in a
    temporary folder; the second call finds every cache and the trained run."""
    pytest.importorskip("transformers")
    from cepr.training.grounded_build import BuildConfig, build

    out = tmp_path_factory.mktemp("grounded-build")
    cfg = BuildConfig(data=str(tiny_data), models=["grounded-edge"], work=str(out / "work"),
                      install=str(out / "install"), hidden=64, layers=1, heads=1, kv_heads=1, head_dim=64, ffn=128,
                      batch_frames=4, steps=6, threads=1, progress=False)
    first = build(cfg, log=lambda s: None)
    again: list[str] = []
    second = build(cfg, log=again.append)
    return out, first, second, again


def test_tiny_grounded_vlm_builds_installs_and_is_scored_by_cepr_vlm_eval(built, tiny_data):
    from cepr.llm.grounded import read_spec

    out, (rec,), (rec2,), again = built
    inst = out / "install" / "grounded-edge"
    assert sorted(p.name for p in inst.iterdir()) == ["build.json", "decoder-q4_0.gguf", "decoder-q8_0.gguf",
                                                      "grounded.json", "projector.npz", "tokenizer.json"]
    assert rec["encoder"] == "edge-int8" and len(rec["encoder_sha256"]) == 64 and rec["steps"] == 6
    assert json.loads((inst / "build.json").read_text())["files"] == rec["files"]
    # the second build reads the caches and the finished run: same files, no training
    assert sum("cached" in x for x in again) == 2 and any("already trained" in x for x in again), again
    assert rec2["files"] == rec["files"]
    spec = read_spec(inst)
    assert spec.token_width == 161 and 0.25 <= spec.temperature <= 8.8
    (run,) = [p for p in (out / "work").iterdir() if p.name.startswith("grounded-edge-")]
    losses = [json.loads(x)["loss"] for x in (run / "log.jsonl").read_text().splitlines() if "loss" in x]
    assert len(losses) == 6 and all(math.isfinite(v) for v in losses)
    p = subprocess.run([sys.executable, "-m", "cepr", "vlm", "eval", str(run), "--data", str(tiny_data), "--split",
                        "test", "--no-progress", "--engine", "transformers", "llamacpp-f32", "llamacpp-q8_0"],
                       capture_output=True, text=True, timeout=600, check=False)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    rows = [json.loads(x) for x in p.stdout.strip().splitlines() if x.startswith("{")]
    assert [r["engine"] for r in rows] == ["transformers", "llamacpp-f32", "llamacpp-q8_0"]
    # llama.cpp reads the projected tokens as embeddings: the same options, the same probabilities (F32 to
    # float rounding, Q8_0 within its quantisation)
    assert rows[1]["agreement_with_transformers"] == 1.0 and rows[1]["max_logprob_gap"] < 1e-2, rows[1]
    assert rows[2]["max_logprob_gap"] < 0.2, rows[2]
    assert rows[1]["accuracy"] == rows[0]["accuracy"]
    # trained with risk summaries: each llama.cpp row scores the sentences it writes
    for r in rows[1:]:
        assert r["reasons_written"] <= r["n"] // 5 and r["ms_per_reason"] > 0, r
        assert "reason_hazard_f1" in r and "reason_action_agreement" in r and isinstance(r["reason_example"], str)
    row = rows[0]
    for k in ("model", "side", "n", "accuracy", "accuracy_ci_low", "accuracy_ci_high", "planner_accuracy",
              "majority_accuracy", "ece", "p_vs_planner", "ms_per_answer", "accuracy_action"):
        assert k in row, k
    assert row["side"] == "edge" and row["n"] % 5 == 0 and row["n"] > 0
    assert row["accuracy_ci_low"] <= row["accuracy"] <= row["accuracy_ci_high"]
    assert 0 <= row["p_vs_planner"] <= 1 and row["ms_per_answer"] > 0
    assert "| model |" in p.stdout


def test_grounded_reasoner_in_the_edge_pipeline_answers_as_the_cached_features_do(built, features, tiny_data):
    """The edge pipeline's grounded reasoner (one ONNX pass, tokens pooled at run time, llama.cpp Q8_0) picks the
    option the same decoder picks from the features cache of the same frames, with its calibrated probability."""
    from cepr.data.cloud_robotics import CloudRoboticsDataset, find_index
    from cepr.data.tasks import TASK_NAMES
    from cepr.edge.models import model_path
    from cepr.edge.pipeline import EdgePipeline
    from cepr.edge.reasoners import create_reasoner
    from cepr.llm.grounded import option_probabilities
    from cepr.training.grounded_eval import engine_logits, engine_reasons
    from cepr.training.grounded_train import extract_features

    out = built[0]
    folder = out / "install" / "grounded-edge"
    reasoner = create_reasoner("grounded", None, vlm_model=str(folder), encoder="edge-int8")
    pipe = EdgePipeline(model_path("edge-int8"), reasoner)
    ds = CloudRoboticsDataset(find_index(str(tiny_data), split="test"))
    n = min(3, len(ds))
    fs = extract_features(str(tiny_data), "test", "edge-int8", frames=n, progress=False)
    logits, _, spec = engine_logits(str(folder), fs, "llamacpp-q8_0")
    assert spec.risk_summary
    reasons, _ = engine_reasons(str(folder), fs, "q8_0")
    for i in range(n):
        r = pipe.run_sample(ds[i])
        for t in TASK_NAMES:
            want = option_probabilities(logits[t][i], spec.temperature)
            a = r.answers[t]
            assert list(a.distribution.values()) == pytest.approx(list(want), abs=1e-4), (i, t)
            assert a.features["model"] == "grounded-edge-q8_0"
            assert a.features["reason"] == reasons[i]  # one risk summary per frame, in every answer
        assert r.logits is None and r.features is None  # the pass's maps are not kept unless asked for
    with pytest.raises(Exception, match="vlm_quant"):
        create_reasoner("grounded", None, vlm_model=str(folder), vlm_quant="q5_k")
    with pytest.raises(Exception, match="grounded-edge-rgb on edge-rgb-int8"):  # auto, an encoder no VLM reads
        create_reasoner("grounded", None, encoder="edge-fp32")
    with pytest.raises(Exception, match="trained on the features of edge-int8"):  # another encoder's pass
        create_reasoner("grounded", None, vlm_model=str(folder), encoder="edge-rgb-int8")


def test_packed_tasks_give_each_question_the_logits_of_its_own_sequence(features):
    """Training packs a frame's five questions behind one vision prefix: with and without the (variable-length)
    summary text, each question's logits equal those of its separate sequence."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from cepr.data.tasks import TASK_NAMES
    from cepr.training.grounded_train import (
        FeatureSet,
        Prompts,
        TrainGroundedConfig,
        _batch,
        _packed_batch,
        _tokenizer,
        build_model,
        packed_logits,
    )

    out, train_path, val_path = features
    fs = FeatureSet.load(train_path)
    prompts = Prompts(_tokenizer(0))
    cfg = TrainGroundedConfig(train=str(train_path), out=str(out / "unused"), hidden=64, layers=2, heads=2,
                              kv_heads=1, head_dim=32, ffn=128)
    model = build_model(cfg, fs.tokens.shape[-1], prompts.tok.get_vocab_size()).eval()
    idx = list(range(min(3, len(fs))))
    for with_summary in (False, True):
        with torch.no_grad():
            tokens, segments, _ = _packed_batch(fs, idx, prompts, with_summary)
            packed = packed_logits(model, tokens, segments)
            for task, got in zip(TASK_NAMES, packed):
                t, ids, lengths, _ = _batch(fs, idx, task, prompts, with_summary)
                torch.testing.assert_close(got, model.next_logits(t, ids, lengths), atol=2e-5, rtol=1e-5)
        # the risk summary's segment returns every position's logits: each equals its own sequence's
        tokens, segments, targets = _packed_batch(fs, idx, prompts, False, np.random.default_rng(0))
        ids, lengths = segments[-1]
        full = packed_logits(model, tokens, segments, full=(len(segments) - 1,))[-1]
        assert full.shape[:2] == ids.shape and (targets[-1] != -100).sum() > 0
        for row in range(len(idx)):
            for j in (len(prompts.risk_ids) - 1, int(lengths[row]) - 2):
                want = model.next_logits(tokens[row:row + 1], ids[row:row + 1, :j + 1])
                torch.testing.assert_close(full[row, j][None], want, atol=2e-5, rtol=1e-5)
                assert targets[-1][row, j] == ids[row, j + 1]  # the target is the next token of the sentence
    both = FeatureSet.concat([train_path, val_path])
    assert len(both) == len(fs) + len(FeatureSet.load(val_path)) and len(both.meta["sources"]) == 2


def test_shipped_grounded_vlms_were_built_on_the_shipped_encoders():
    """Each shipped grounded VLM's build.json names the sha256 of the encoder it was trained on and of each of its
    files: a retrained encoder fails here until `cepr vlm build` rebuilds the VLMs on it."""
    import hashlib

    from cepr.edge.models import SHIPPED_GROUNDED, grounded_path, model_path
    from cepr.llm.grounded import read_spec

    for name, encoder in SHIPPED_GROUNDED.items():
        folder = grounded_path(name)
        build = json.loads((folder / "build.json").read_text())
        enc = hashlib.sha256(model_path(encoder).read_bytes()).hexdigest()
        assert build["encoder"] == encoder and build["encoder_sha256"] == enc, \
            f"{name} was built on another {encoder}: run `cepr vlm build`"
        for f, sha in build["files"].items():
            assert hashlib.sha256((folder / f).read_bytes()).hexdigest() == sha, (name, f)
        spec = read_spec(folder)
        side = "cloud" if encoder == "cloud" else "edge"  # the cloud's w32 encoder, the edge's w16 ones
        assert spec.side == side and spec.encoder == encoder and spec.risk_summary and not spec.with_summary


def test_vision_tokens_on_the_wire_round_trip_and_reject_garbage():
    from cepr.llm.grounded import decode_vision, encode_vision

    x = np.random.default_rng(0).normal(size=(80, 256)).astype(np.float32)
    x[3] = 0.0  # a token of zeros: its INT8 scale is 0
    sizes = {}
    for codec, tol in (("f32", 0.0), ("fp16", 2e-3), ("int8", 0.02)):
        blob = encode_vision(x, codec)
        sizes[codec] = len(blob)
        y = decode_vision(blob)
        assert y.shape == x.shape and y.dtype == np.float32 and float(np.abs(y - x).max()) <= tol * 3, codec
    assert sizes == {"f32": 12 + 4 * 80 * 256, "fp16": 12 + 2 * 80 * 256, "int8": 12 + 2 * 80 + 80 * 256}
    for bad, msg in ((b"garbage", "CEPRV1"), (encode_vision(x, "fp16")[:-1], "expected"),
                     (b"CEPRV1" + bytes([9, 0, 1, 0, 1, 0]) + b"\0" * 4, "unknown codec")):
        with pytest.raises(Exception, match=msg):
            decode_vision(bad)


def test_features_payload_splits_the_vlm_between_edge_and_cloud(built, tiny_data):
    """The edge module runs the grounded reasoner and keeps its projected tokens; the cloud module sends them
    (payload: features) to backend: grounded, whose decoder answers as the edge's did (FP16), with the request's
    bytes counted and the features part as the payload record prices it."""
    import base64

    from cepr.cloud.module import CloudModule
    from cepr.data.cloud_robotics import CloudRoboticsDataset, find_index
    from cepr.edge.module import EdgeModule
    from cepr.errors import CeprError
    from cepr.llm.grounded import decode_vision, encode_vision

    folder = str(built[0] / "install" / "grounded-edge")
    edge = EdgeModule(model="edge-int8", reasoner="grounded", vlm_model=folder)
    f = CloudRoboticsDataset(find_index(str(tiny_data), split="test")).frames[0]
    sample = {"key": "k0", "task": "action", "rgb": str(f.rgb_path), "label": str(f.label_path)}
    for codec in ("fp16", "int8"):
        cloud = CloudModule(backend="grounded", payload="features", codec=codec, emulate_link=False)
        try:
            e = edge.predict(sample)  # priced by the cloud module that exists now
            state = e["edge_state"]
            tokens = decode_vision(state.vision)
            assert tokens.shape == (80, 64) and state.vision_model == folder
            assert e["reasoner"] == "grounded-edge-q8_0"
            c = cloud.inference(sample, edge_state=state)
        finally:
            cloud.cleanup()
        assert c["status"] == "ok" and c["model"] == "grounded-edge-q8_0", c
        want = len(base64.b64encode(encode_vision(tokens, codec)))
        assert c["payload_bytes"] == e["send_bytes"] == {"image": 0, "summary": 0, "features": want}
        assert want < c["bytes_up"] < want + 1000 and c["transfer_ms"] > 0
        if codec == "fp16":
            assert c["cloud_answer"] == e["answer"] and abs(c["confidence"] - e["confidence"]) < 0.01
    with pytest.raises(CeprError, match="goes with backend: grounded"):
        CloudModule(payload="features")
    with pytest.raises(CeprError, match="backend: grounded reads payload: features .* not 'summary'"):
        CloudModule(backend="grounded", payload="summary")
    with pytest.raises(CeprError, match="takes codec fp16 or int8"):
        CloudModule(backend="grounded", payload="features", codec="jpeg")


def _option_logprobs(engine, prompts, tokens: np.ndarray) -> tuple[list[np.ndarray], str]:
    """Each task's option log-probabilities and the risk summary of one frame on one engine."""
    from cepr.data.tasks import TASK_NAMES

    engine.set_frame(tokens.astype(np.float32))
    rows = [np.log(option_probabilities(engine.next_logits(prompts.text_ids(t, None))[prompts.option_ids(t)]))
            for t in TASK_NAMES]
    return rows, prompts.decode(engine.generate(prompts.risk_ids, prompts.eos))


def test_transformers_reads_a_shipped_decoder_made_from_its_gguf(tiny_data, tmp_path, monkeypatch):
    """A shipped VLM carries its decoder as GGUF only: the Q8_0 file becomes a Hugging Face folder once (weights
    dequantized, rotary rows back in Hugging Face order), and transformers on it picks llama.cpp's options with
    llama.cpp's probabilities and writes the same risk summary, task after task on one cached frame."""
    pytest.importorskip("transformers")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    from cepr.cloud.grounded_engines import decoder_hf_folder, open_engine
    from cepr.edge.models import grounded_path
    from cepr.errors import CeprError
    from cepr.llm.grounded import load_prompts
    from cepr.training.grounded_train import extract_features

    folder = grounded_path("grounded-edge-rgb")
    hf = decoder_hf_folder(folder)
    assert hf.parent == tmp_path / "cepr" / "grounded-hf" and (hf / "model.safetensors").is_file()
    stamp = (hf / "model.safetensors").stat().st_mtime_ns
    assert decoder_hf_folder(folder) == hf and (hf / "model.safetensors").stat().st_mtime_ns == stamp  # made once
    fs = extract_features(str(tiny_data), "test", "edge-rgb-int8", frames=2, progress=False)
    prompts, _ = load_prompts(folder)
    engines = [open_engine(folder, "llamacpp"), open_engine(folder, "transformers")]
    try:
        for i in range(len(fs)):
            (a, reason_a), (b, reason_b) = (_option_logprobs(e, prompts, fs.tokens[i]) for e in engines)
            for x, y in zip(a, b):
                assert x.argmax() == y.argmax() and np.abs(x - y).max() < 0.05, (x, y)
            assert reason_a == reason_b and reason_a
    finally:
        for e in engines:
            e.close()
    with pytest.raises(CeprError, match="neither a decoder/ folder"):
        decoder_hf_folder(tmp_path)
    with pytest.raises(CeprError, match="unknown engine 'tensorrt'"):
        open_engine(folder, "tensorrt")


def test_backend_grounded_runs_its_own_encoder_on_an_image_payload(built, tiny_data):
    """payload: image: the cloud decodes the JPEG as it was sent, runs the VLM's own encoder on it, pools and
    projects, and answers as the same VLM does on those tokens by hand; a VLM on an RGB-D encoder refuses an image
    (it carries no depth); backend: grounded takes no summary payload."""
    import cv2

    from cepr.cloud.module import CloudModule
    from cepr.cloud.payload import encode_image
    from cepr.data.cloud_robotics import CloudRoboticsDataset, find_index
    from cepr.data.tasks import get_task
    from cepr.edge.models import grounded_path, model_path
    from cepr.edge.runtime import SegmentationModel
    from cepr.errors import CeprError
    from cepr.llm.grounded import GroundedLlamaCpp, load_prompts
    from cepr.records.payload import PayloadConfig

    f = CloudRoboticsDataset(find_index(str(tiny_data), split="test")).frames[0]
    sample = {"key": "k0", "task": "action", "rgb": str(f.rgb_path), "label": str(f.label_path)}
    cloud = CloudModule(backend="grounded", vlm_model="grounded-edge-rgb", payload="image", quality=80,
                        emulate_link=False)
    try:
        c = cloud.inference(sample)
    finally:
        cloud.cleanup()
    assert c["status"] == "ok" and c["model"] == "grounded-edge-rgb-q8_0", c
    sent = encode_image(cv2.cvtColor(cv2.imread(str(f.rgb_path)), cv2.COLOR_BGR2RGB),
                        PayloadConfig(mode="image", quality=80))
    assert c["payload_bytes"]["image"] == len(sent.data_url()) < c["bytes_up"]
    rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(sent.data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    seg = SegmentationModel(model_path("edge-rgb-int8"))(rgb, None, features=True)
    folder = grounded_path("grounded-edge-rgb")
    prompts, spec = load_prompts(folder)
    g = GroundedLlamaCpp(folder)
    try:
        g.set_frame(vision_tokens(seg.features, seg.logits, None, spec.grid))
        p = option_probabilities(g.next_logits(prompts.text_ids("action", None))[prompts.option_ids("action")],
                                 spec.temperature)
    finally:
        g.close()
    assert c["cloud_answer"] == get_task("action").answers[int(p.argmax())]
    assert c["confidence"] == pytest.approx(float(p.max()), abs=1e-3)
    rgbd = CloudModule(backend="grounded", vlm_model=str(built[0] / "install" / "grounded-edge"), payload="image",
                       emulate_link=False)
    try:
        bad = rgbd.inference(sample)
    finally:
        rgbd.cleanup()
    assert bad["status"] == "error" and "reads depth" in bad["reason"], bad
    with pytest.raises(CeprError, match="engine must be one of llamacpp, transformers, vllm"):
        CloudModule(backend="grounded", payload="image", engine="tgi")


def test_a_grounded_vlm_behind_cepr_serve_cloud_answers_as_in_process(tiny_data, tmp_path):
    """server: grounded (base_url: auto starts `cepr serve cloud --vlm`): the openai backend sends the image, the
    service runs the VLM's encoder and decoder, and every answer and confidence is the in-process backend's."""
    from helpers import run_one_algorithm

    common = {"payload": "image", "resolution": "640x480", "codec": "jpeg", "quality": 85, "link": "none"}
    served = run_one_algorithm(tmp_path / "served", tiny_data, "cloud-only", limit=4, cloud={
        **common, "server": "grounded", "server_vlm": "grounded-edge-rgb", "server_vlm_engine": "llamacpp",
        "timeout_s": 60.0})
    here = run_one_algorithm(tmp_path / "here", tiny_data, "cloud-only", limit=4, replace_cloud=True, cloud={
        **common, "backend": "grounded", "vlm_model": "grounded-edge-rgb"})
    assert len(served) == len(here) == 4
    want = {(r["key"], r["task"]): r["cloud"] for r in here}
    for r in served:
        c, w = r["cloud"], want[(r["key"], r["task"])]
        assert c["status"] == w["status"] == "ok" and c["model"] == "grounded-edge-rgb", c
        assert c["cloud_answer"] == w["cloud_answer"] and c["confidence"] == pytest.approx(w["confidence"], abs=1e-3)
        assert c["payload_bytes"] == w["payload_bytes"] and c["payload_bytes"]["image"] > 0


def test_server_grounded_settings_are_checked_up_front():
    from cepr.cloud.module import CloudModule
    from cepr.errors import CeprError

    CloudModule.check_hyperparameters(server="grounded", server_vlm="grounded-edge-rgb", payload="image")
    with pytest.raises(CeprError, match="server_vlm: .*did you mean the shipped grounded VLM 'grounded-edge-rgb'"):
        CloudModule.check_hyperparameters(server="grounded", server_vlm="grounded-edge-rbg", payload="image")
    with pytest.raises(CeprError, match="server_vlm_engine.*llamacpp, transformers, vllm"):
        CloudModule.check_hyperparameters(server="grounded", server_vlm_engine="tgi", payload="image")
    with pytest.raises(CeprError, match="server_vlm only apply to server: grounded"):
        CloudModule.check_hyperparameters(server_vlm="grounded-edge-rgb")


def test_the_grounded_service_refuses_what_it_cannot_answer():
    """`cepr serve cloud --vlm`'s expert: an image answers; no image, an unreadable image or a question that is no
    task is a 400 (RequestError) naming the problem; its model id is the VLM's name."""
    import base64

    import cv2

    from cepr.cloud.expert import RequestError
    from cepr.cloud.grounded_backend import GroundedExpert
    from cepr.data.tasks import TaskParams, get_task
    from cepr.serve.cloud_server import create_app

    task = get_task("traversable")
    question = f"{task.render_prompt(TaskParams())}\nAllowed answers: {', '.join(task.answers)}."
    _, jpg = cv2.imencode(".jpg", np.full((240, 320, 3), 90, np.uint8))
    image = {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(jpg).decode()}}
    expert = GroundedExpert("grounded-edge-rgb")
    try:
        reply = expert.answer([{"role": "user", "content": [{"type": "text", "text": question}, image]}])
        assert json.loads(reply.text)["answer"] in task.answers and reply.task == "traversable"
        with pytest.raises(RequestError, match="answers from an image: the request carries none"):
            expert.answer([{"role": "user", "content": question}])
        bad = {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(b"xx").decode()}}
        with pytest.raises(RequestError):
            expert.answer([{"role": "user", "content": [{"type": "text", "text": question}, bad]}])
        with pytest.raises(RequestError, match="matches none of the tasks"):
            expert.answer([{"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"},
                                                        image]}])
        app = create_app(expert=expert)
        assert "grounded-edge-rgb" in app.title
    finally:
        expert.close()
