"""The reference server's app in process (FastAPI's TestClient): metrics per app, injected faults."""

import json
from types import SimpleNamespace

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from cepr.serve.cloud_server import FaultConfig, create_app

CHAT = {"model": "m", "messages": [{"role": "user", "content": "path hazard?"}]}


class FakeExpert:
    def answer(self, messages):
        return SimpleNamespace(text='{"answer": "no", "reason": "clear", "confidence": 0.9}', source="summary",
                               prompt_tokens=7, completion_tokens=3)


def metrics(client) -> dict[str, float]:
    return {s.name: s.value for fam in text_string_to_metric_families(client.get("/metrics").text)
            for s in fam.samples if not s.labels}


def test_each_app_has_its_own_metrics_with_a_latency_histogram():
    a, b = TestClient(create_app(expert=FakeExpert())), TestClient(create_app(expert=FakeExpert()))
    for _ in range(3):
        assert a.post("/v1/chat/completions", json=CHAT).json()["usage"]["total_tokens"] == 10
    assert a.post("/v1/chat/completions", content=b"not json").status_code == 400
    ma, mb = metrics(a), metrics(b)
    assert ma["cepr_requests_total"] == 3 and ma["cepr_request_errors_total"] == 1
    assert ma["cepr_prompt_tokens_total"] == 21 and ma["cepr_completion_tokens_total"] == 9
    assert ma["cepr_request_seconds_count"] == 3 and ma["cepr_request_seconds_sum"] > 0
    assert mb["cepr_requests_total"] == 0 and mb["cepr_request_seconds_count"] == 0
    assert a.get("/metrics").headers["content-type"].startswith("text/plain")


def test_streamed_answer_is_the_plain_answer_in_pieces():
    c = TestClient(create_app(expert=FakeExpert()))
    plain = c.post("/v1/chat/completions", json=CHAT).json()["choices"][0]["message"]["content"]
    events = c.post("/v1/chat/completions", json={**CHAT, "stream": True,
                                                  "stream_options": {"include_usage": True}}).text.split("\n\n")
    chunks = [json.loads(e[len("data: "):]) for e in events if e.startswith("data: {")]
    assert "".join(ch["choices"][0]["delta"].get("content", "") for ch in chunks if ch["choices"]) == plain
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3
    assert events[-2] == "data: [DONE]"


@pytest.mark.parametrize("status,kind", [(429, "rate_limit_error"), (503, "server_error")])
def test_injected_errors_carry_status_and_retry_after(status, kind):
    c = TestClient(create_app(expert=FakeExpert(), faults=FaultConfig(error_status=status, fail_first=2,
                                                                       retry_after_s=1.5)))
    for _ in range(2):
        r = c.post("/v1/chat/completions", json=CHAT)
        assert r.status_code == status and r.headers["retry-after"] == "1.5"
        assert r.json()["error"]["type"] == kind
    assert c.post("/v1/chat/completions", json=CHAT).status_code == 200
    assert metrics(c)["cepr_request_errors_total"] == 2
