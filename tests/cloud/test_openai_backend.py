"""The OpenAI-compatible client against the real reference expert server, healthy and faulty."""

import json

import pytest

from cepr.cloud.openai_backend import OpenAIBackend
from cepr.data.cloud_robotics import CloudRoboticsDataset, find_index
from cepr.data.tasks import TASKS, camera_for
from cepr.edge.planner import Planner
from cepr.edge.summary import summarize
from cepr.errors import CeprError
from cepr.records import CloudRequest


@pytest.fixture(scope="module")
def requests_(tiny_data):
    out = []
    for s in list(CloudRoboticsDataset(find_index(tiny_data, split="test")))[:4]:
        cam = camera_for(s.sidecar, *s.label.shape[::-1])
        summ = summarize(s.label, s.depth, cam)
        for t in ("path_hazard", "action"):
            out.append((CloudRequest(t, TASKS[t].render_prompt(), TASKS[t].answers, summary=summ.to_dict(),
                                     image=s.rgb, camera=cam.to_dict(), key=f"{s.frame.stem}:{t}"), summ))
    return out


def body_bytes(b: OpenAIBackend, req: CloudRequest, stream: bool | None = None) -> int:
    """Length of the JSON body one attempt of ``req`` puts on the wire, rebuilt here from the messages and the
    settings (the SDK writes compact JSON): what ``bytes_up`` must equal for a request answered at the first try."""
    from cepr.cloud.openai_backend import build_messages

    cfg = b.cfg
    stream = cfg.stream if stream is None else stream
    body = {"messages": build_messages(cfg, req), "model": cfg.model, "max_tokens": cfg.max_tokens,
            "temperature": cfg.temperature, **cfg.extra_body}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    return len(json.dumps(body, separators=(",", ":")).encode())


def backend(url, **kw):
    cfg = {"base_url": url, "model": "cepr-reference-expert-not-an-llm", "timeout_s": 10.0, **kw}
    return OpenAIBackend(cfg)


def test_server_endpoints(start_server):
    srv = start_server()
    assert json.loads(srv.get("/health"))["status"] == "ok"
    assert "not-an-llm" in json.loads(srv.get("/v1/models"))["data"][0]["id"]
    m = srv.metrics()
    assert m["cepr_requests_total"] == 0 and m["cepr_request_seconds_count"] == 0
    assert "# TYPE cepr_request_seconds histogram" in srv.get("/metrics")


@pytest.mark.parametrize("stream", [True, False])
def test_summary_mode_answers_like_the_planner_with_counted_bytes(start_server, requests_, stream):
    srv = start_server()
    b = backend(srv.url, stream=stream, payload={"mode": "summary"})
    for req, summ in requests_:
        r = b.infer(req)
        assert r.status == "ok", r.reason
        assert r.answer == Planner().answer(summ, (req.task,))[req.task].answer
        assert r.attempts == 1 and r.bytes_up == body_bytes(b, req)  # the request body, byte for byte
        assert r.bytes_down > 20
        # the reference expert reports its counts and says they are estimates: recorded as such
        assert r.usage.counted == "server-estimate" and r.usage.completion_tokens > 0
        assert (r.timings.ttft_ms is not None) == stream
        assert r.timings.total_ms > 0
    m = srv.metrics()
    assert m["cepr_requests_total"] == m["cepr_request_seconds_count"] == len(requests_)
    assert m["cepr_image_requests_total"] == 0 and m["cepr_request_errors_total"] == 0
    assert m["cepr_completion_tokens_total"] > 0 and m["cepr_request_seconds_sum"] > 0


def test_image_mode_sends_the_image_and_costs_more_bytes(start_server, requests_):
    srv = start_server()
    req, _ = requests_[0]
    from cepr.cloud.expert import image_tokens

    b_img, b_sum = backend(srv.url, payload={"mode": "image", "codec": "png"}), backend(srv.url, payload={"mode": "summary"})
    b_both = backend(srv.url, payload={"mode": "summary+image", "codec": "png"})
    r_img, r_sum, r_both = b_img.infer(req), b_sum.infer(req), b_both.infer(req)
    for b, r in ((b_img, r_img), (b_sum, r_sum), (b_both, r_both)):
        assert r.attempts == 1 and r.bytes_up == body_bytes(b, req)
    assert r_img.status == r_both.status == "ok" and r_img.answer in req.answers
    assert r_both.answer in req.answers  # what each combination answers: tests/cloud/test_expert.py
    assert r_both.bytes_up > r_sum.bytes_up + 1000
    h, w = req.image.shape[:2]
    assert r_both.usage.prompt_tokens == r_sum.usage.prompt_tokens + image_tokens(w, h)
    assert srv.metrics()["cepr_image_requests_total"] == 2


def test_garbage_answers_become_error_results(start_server, requests_):
    srv = start_server("--fault-garbage-rate", 1.0)
    b = backend(srv.url)
    for req, _ in requests_[:3]:
        r = b.infer(req)
        assert r.status == "error" and "unparsable" in r.reason and r.raw_text
        assert r.answer is None and r.bytes_down > 0


def test_slow_server_falls_back_at_the_deadline(start_server, requests_):
    srv = start_server("--fault-delay-ms", 1500)
    b = backend(srv.url, timeout_s=0.3, retries=0)
    r = b.infer(requests_[0][0])
    assert r.status == "fallback" and ("timeout" in r.reason or "deadline" in r.reason)
    assert r.timings.total_ms < 1200


def test_server_errors_are_retried_then_fall_back(start_server, requests_):
    srv = start_server("--fault-error-rate", 1.0)
    b = backend(srv.url, retries=2, backoff_s=0.01)
    r = b.infer(requests_[0][0])
    assert r.status == "fallback" and "InternalServerError" in r.reason
    assert r.attempts == 3
    assert srv.metrics()["cepr_request_errors_total"] == 3


def test_retried_attempts_count_their_bytes(start_server, requests_):
    srv = start_server("--fault-fail-first", 1)
    b = backend(srv.url, retries=1, backoff_s=0.01)
    first, second = b.infer(requests_[0][0]), b.infer(requests_[0][0])
    assert first.status == second.status == "ok" and first.answer == second.answer
    assert (first.attempts, second.attempts) == (2, 1)
    # the failed attempt sent the same body, and its error answer came back: both went on the wire
    assert first.bytes_up == 2 * second.bytes_up
    assert first.bytes_down > second.bytes_down


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured(start_server, requests_, status):
    srv = start_server("--fault-fail-first", 1, "--fault-error-status", status, "--fault-retry-after", 1)
    b = backend(srv.url, retries=2, backoff_s=0.01)
    r = b.infer(requests_[0][0])
    assert r.status == "ok" and r.attempts == 2
    assert r.timings.total_ms >= 1000  # waited what the server asked, not the 10 ms backoff


def test_retry_after_past_the_deadline_falls_back_at_once(start_server, requests_):
    srv = start_server("--fault-error-rate", 1.0, "--fault-error-status", 503, "--fault-retry-after", 30)
    b = backend(srv.url, retries=5, timeout_s=2.0)
    r = b.infer(requests_[0][0])
    assert r.status == "fallback" and "InternalServerError" in r.reason and r.attempts == 1
    assert r.timings.total_ms < 1000  # no wait that would end past the deadline
    assert srv.metrics()["cepr_request_errors_total"] == 1


def test_backoff_retries_stop_at_the_deadline(start_server, requests_):
    srv = start_server("--fault-error-rate", 1.0)
    b = backend(srv.url, retries=50, backoff_s=0.2, backoff_max_s=0.2, timeout_s=1.0)
    r = b.infer(requests_[0][0])
    assert r.status == "fallback" and 2 <= r.attempts < 50
    # 50 retries 0.2 s apart would take 10 s; the deadline is 1 s. The 0.5 s of slack is for a loaded machine
    # (the last attempt's timeout fires late when the CPU is busy), not for another retry.
    assert r.timings.total_ms < 1500


def test_killed_server_every_sample_gets_a_result_and_the_circuit_opens(start_server, requests_):
    srv = start_server()
    b = backend(srv.url, retries=1, backoff_s=0.01, circuit_failures=3, circuit_cooldown_s=60)
    results = []
    for i, (req, _) in enumerate(requests_):
        if i == 3:
            srv.stop()
        results.append(b.infer(req))
    assert len(results) == len(requests_)
    assert [r.status for r in results[:3]] == ["ok"] * 3
    assert all(r.status == "fallback" for r in results[3:])
    assert any("circuit open" in r.reason for r in results[6:])
    assert all(r.attempts == 0 for r in results if "circuit open" in r.reason)


def test_unreachable_server_falls_back(requests_):
    from helpers import free_port

    b = backend(f"http://127.0.0.1:{free_port()}/v1", retries=1, backoff_s=0.01)
    r = b.infer(requests_[0][0])
    assert r.status == "fallback" and "APIConnectionError" in r.reason and r.attempts == 2


def test_api_key_comes_from_the_named_environment_variable(monkeypatch):
    monkeypatch.delenv("CEPR_TEST_KEY", raising=False)
    with pytest.raises(CeprError, match="CEPR_TEST_KEY"):
        backend("http://127.0.0.1:1/v1", api_key_env="CEPR_TEST_KEY")
    monkeypatch.setenv("CEPR_TEST_KEY", "sk-test")
    assert backend("http://127.0.0.1:1/v1", api_key_env="CEPR_TEST_KEY").client.api_key == "sk-test"


def test_unknown_config_keys_are_refused():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="api_key"):
        backend("http://127.0.0.1:1/v1", api_key="sk-literal-keys-are-not-allowed")


def test_servers_without_stream_options_get_counted_tokens(start_server, requests_):
    srv = start_server("--fault-no-stream-options")
    b = backend(srv.url)
    r1, r2 = b.infer(requests_[0][0]), b.infer(requests_[1][0])
    assert r1.status == r2.status == "ok"
    assert r1.usage.counted == r2.usage.counted == "estimate" and r1.usage.completion_tokens > 0
    # the first request learned that the server refuses stream_options: the second does not send it
    assert srv.metrics()["cepr_request_errors_total"] == 1


def test_client_adds_link_transfer_and_inprocess_matches_http(start_server, requests_, cloud_model):
    from cepr.cloud.client import CloudClient, create_backend
    from cepr.link import Link

    srv = start_server()
    http = CloudClient(backend(srv.url, payload={"mode": "summary"}), Link("4g", seed=1))
    local = CloudClient(create_backend("inprocess", {"expert_model": cloud_model,
                                                     "payload": {"mode": "summary"}}), Link("4g", seed=1))
    for req, _ in requests_[:4]:
        a, b = http.infer(req), local.infer(req)
        assert a.answer == b.answer
        assert a.timings.transfer_ms > 50 * 0.5  # at least most of a 4G round trip
        assert http.latency_ms(a) == a.timings.total_ms + a.timings.transfer_ms
        assert 0 < b.bytes_up <= a.bytes_up  # HTTP adds framing; both carry the same JSON
    with pytest.raises(CeprError, match="did you mean 'openai'"):
        create_backend("opanai", {})
