"""Cloud latency starts before the payload is built and encoded, in every backend: image encoding is
part of what the robot waits for."""

import time

import pytest

from cepr.cloud import payload as payload_mod
from cepr.cloud.client import create_backend
from cepr.data.tasks import TASKS
from cepr.records import CloudRequest

SLOW_MS = 120.0


@pytest.fixture
def slow_encoding(monkeypatch):
    real = payload_mod.encode_image

    def slow(*a, **kw):
        time.sleep(SLOW_MS / 1e3)
        return real(*a, **kw)

    monkeypatch.setattr(payload_mod, "encode_image", slow)
    import cepr.cloud.openai_backend as ob

    monkeypatch.setattr(ob, "encode_image", slow, raising=False)


def _request():
    import numpy as np

    t = TASKS["action"]
    return CloudRequest("action", t.render_prompt(), t.answers, summary=None,
                        image=np.zeros((48, 64, 3), np.uint8), camera=None, key="k")


def test_http_backend_latency_includes_encoding(slow_encoding):
    # an unreachable server: the request fails fast, so what is measured is mostly the encoding
    from helpers import free_port

    b = create_backend("openai", {"base_url": f"http://127.0.0.1:{free_port()}/v1", "model": "m", "retries": 0,
                                  "timeout_s": 5.0, "payload": {"mode": "image"}})
    r = b.infer(_request())
    assert r.status == "fallback"
    assert r.timings.total_ms >= SLOW_MS


def test_inprocess_backend_latency_includes_encoding(slow_encoding, tiny_rgb_model):
    b = create_backend("inprocess", {"expert_model": str(tiny_rgb_model), "payload": {"mode": "image"}})
    r = b.infer(_request())
    assert r.status == "ok" and r.timings.total_ms >= SLOW_MS


def test_the_link_time_is_waited_out_unless_asked_not_to():
    """The modelled transfer is slept, so wall clock and throughput pay for the link."""
    from cepr.cloud.client import CloudClient
    from cepr.link.network import Link
    from cepr.records import CloudResult

    class Instant:
        def infer(self, req):
            return CloudResult("ok", "go", bytes_up=200_000, bytes_down=100)

    for emulate in (True, False):
        client = CloudClient(Instant(), Link("congested", seed=0), emulate=emulate)
        t0 = time.perf_counter()
        r = client.infer(_request())
        waited = 1e3 * (time.perf_counter() - t0)
        assert r.timings.transfer_ms > 1000  # 200 KB over a 1 Mbps uplink
        assert (waited >= r.timings.transfer_ms) is emulate
