"""The grounded VLM's decoder behind vLLM's OpenAI server, fed prompt embeddings (`backend: grounded` with
`engine: vllm`): the same options, probabilities and risk summaries as llama.cpp, on one server started once."""

from __future__ import annotations

import urllib.parse

import numpy as np
import pytest

from cepr.llm.grounded import option_probabilities


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_with_prompt_embeddings_answers_as_llamacpp(tiny_data, tmp_path, monkeypatch):
    from cepr.cloud.client import create_backend
    from cepr.cloud.grounded_engines import open_engine
    from cepr.data.cloud_robotics import CloudRoboticsDataset, find_index
    from cepr.data.tasks import TASK_NAMES, TaskParams, get_task
    from cepr.edge.models import grounded_path
    from cepr.llm.vllm_env import INSTALL_HINT, find_vllm_python
    from cepr.records import CloudRequest
    from cepr.training.grounded_train import extract_features

    if find_vllm_python(required=False) is None:
        pytest.skip(f"vLLM is not installed: {INSTALL_HINT}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # the decoder's Hugging Face folder, made from its GGUF
    folder = grounded_path("grounded-edge-rgb")
    ds = CloudRoboticsDataset(find_index(str(tiny_data), split="test"))
    cfg = {"vlm_model": "grounded-edge-rgb", "payload": {"mode": "image", "codec": "jpeg"}}
    task = get_task("path_hazard")
    req = CloudRequest(task.name, task.render_prompt(TaskParams()), task.answers, image=ds[0].rgb, key="s0")
    by_llamacpp = create_backend("grounded", cfg)
    try:
        want = by_llamacpp.infer(req)
    finally:
        by_llamacpp.close()

    backend = create_backend("grounded", {**cfg, "engine": "vllm"})
    try:
        got = backend.infer(req)  # an image: the encoder runs here, the decoder in vLLM
        assert got.status == "ok" and got.model == "grounded-edge-rgb-vllm", got
        assert (got.answer, got.reason) == (want.answer, want.reason)
        assert got.confidence == pytest.approx(want.confidence, abs=0.01)
        engine, prompts, _ = backend.engine_for("grounded-edge-rgb")
        assert urllib.parse.urlsplit(engine.srv.url).hostname == "127.0.0.1"  # vLLM listens only for cepr
        assert engine.bytes_sent > 0
        fs = extract_features(str(tiny_data), "test", "edge-rgb-int8", frames=2, progress=False)
        ref = open_engine(folder, "llamacpp")
        try:
            for i in range(len(fs)):
                for e in (engine, ref):
                    e.set_frame(fs.tokens[i].astype(np.float32))
                rows = [[np.log(option_probabilities(e.next_logits(prompts.text_ids(t, None))[prompts.option_ids(t)]))
                         for e in (engine, ref)] for t in TASK_NAMES]
                for a, b in rows:  # the same weights (Q8_0, dequantized); activations differ a little
                    assert a.argmax() == b.argmax() and np.abs(a - b).max() < 0.05, (a, b)
                texts = [prompts.decode(e.generate(prompts.risk_ids, prompts.eos)) for e in (engine, ref)]
                assert texts[0] == texts[1] and texts[0]
        finally:
            ref.close()
    finally:
        backend.close()
    assert engine.srv.proc.poll() is not None  # closing the backend stops vLLM
