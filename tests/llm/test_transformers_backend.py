"""The `transformers` cloud backend on the tiny Llama model (a local Hugging Face folder), in this process."""

from __future__ import annotations

import math

import pytest

from cepr.errors import CeprError
from cepr.records import CloudRequest

SUMMARY = {"image": [640, 480], "distances": "depth", "risk": 0.4, "uncertainty": 0.1, "corridor_m": [0.6, 1.2],
           "free_m": [None, 3.2, None], "object_fields": ["class", "distance_m"], "objects": [["person", 3.2]],
           "objects_omitted": 0}


def _request(task="action", answers=("go", "slow", "stop", "avoid_left", "avoid_right")):
    return CloudRequest(task=task, prompt="What should the robot do?", answers=answers, summary=SUMMARY, key="s1")


@pytest.fixture(scope="module")
def backend(tiny_llm):
    from cepr.cloud.client import create_backend

    return create_backend("transformers", {"model": str(tiny_llm["dir"] / "hf")})


def test_choice_is_the_most_likely_allowed_reply(backend):
    import json

    import torch

    req = _request()
    r = backend.infer(req)
    assert r.status == "ok" and r.answer in req.answers and 0 < r.confidence <= 1
    prompt = backend._prompt_ids(req)
    assert r.usage.prompt_tokens == len(prompt) and r.usage.completion_tokens > 0
    # the same scores from one uncached forward pass per reply
    scores = []
    for a in req.answers:
        reply = backend.tok.encode(json.dumps({"answer": a}), add_special_tokens=False)
        with torch.no_grad():
            logits = backend.model(torch.tensor([prompt + reply])).logits[0]
        lp = torch.log_softmax(logits[len(prompt) - 1:-1].float(), dim=-1)
        scores.append(float(lp[torch.arange(len(reply)), torch.tensor(reply)].sum()))
    m = max(scores)
    probs = [math.exp(s - m) for s in scores]
    probs = [p / sum(probs) for p in probs]
    best = max(range(len(probs)), key=probs.__getitem__)
    assert r.answer == req.answers[best] and math.isclose(r.confidence, probs[best], abs_tol=1e-3)


def test_free_generation_is_parsed_or_an_error(tiny_llm):
    from cepr.cloud.client import create_backend

    b = create_backend("transformers", {"model": str(tiny_llm["dir"] / "hf"), "answer_format": "none",
                                        "max_tokens": 12})
    r = b.infer(_request())
    assert r.status in ("ok", "error") and r.usage.completion_tokens <= 12
    if r.status == "error":  # random weights write nonsense: reported, never a crash
        assert "unparsable" in r.reason


def test_bad_settings(tiny_llm, tmp_path):
    from cepr.cloud.client import create_backend
    from cepr.records import PayloadConfig

    with pytest.raises(CeprError, match="not a local Hugging Face folder"):
        create_backend("transformers", {"model": str(tmp_path)})
    with pytest.raises(CeprError, match="payload: summary"):
        create_backend("transformers", {"model": str(tiny_llm["dir"] / "hf"),
                                        "payload": PayloadConfig(mode="summary+image")})
    with pytest.raises(ValueError):
        create_backend("transformers", {"model": str(tiny_llm["dir"] / "hf"), "base_url": "x"})


def test_cloud_only_job_on_the_transformers_backend(tiny_llm, tiny_data, tmp_path):


    from cepr.data.tasks import get_task
    from helpers import run_one_algorithm

    lines = run_one_algorithm(tmp_path, tiny_data, "cloud-only", replace_cloud=True,
                              cloud={"backend": "transformers", "model": str(tiny_llm["dir"] / "hf"),
                                     "payload": "summary", "link": "4g"})
    assert len(lines) == 3
    for rec in lines:
        assert rec["cloud"]["status"] == "ok" and rec["cloud"]["cloud_answer"] in get_task(rec["task"]).answers
        assert rec["cloud"]["model"] == "hf" and rec["cloud"]["tokens_counted"] == "server"
