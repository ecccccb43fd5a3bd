"""The metrics that depend on per-sample payloads: privacy_redacted_share, and bandwidth_saving when a payload
policy picks each request's payload (each sent sample against its own payload; unsent ones priced with what the
policy would have chosen)."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from cepr.cloud.payload import encode_image
from cepr.dispatch.payload_policy import payload_policy
from cepr.errors import CeprError
from cepr.metrics import joint
from cepr.records import EdgeState, PayloadConfig

FIELDS = ["class", "distance_m"]


def _cloud(up=1000, **kw):
    return {"source": "cloud", "key": "k", "task": "action", "answer": "go", "cloud_answer": "go", "status": "ok",
            "latency_ms": 5.0, "bytes_up": up, "bytes_down": 10, "prompt_tokens": 1, "completion_tokens": 1, **kw}


def _edge(**kw):
    return {"source": "edge", "key": "k", "task": "action", "answer": "go", "confidence": 0.9, "latency_ms": 1.0,
            **kw}


def test_privacy_redacted_share_over_the_samples_sent():
    y_true = ["L0", "L1", "L2", "L3"]
    y_pred = [[True, None, _edge(), _cloud(privacy_redacted=True)],
              [True, None, _edge(), _cloud(privacy_redacted=False)],
              [True, None, _edge(), _cloud(privacy_redacted=True)],
              [False, None, _edge(), None]]  # not sent: not counted
    assert joint.privacy_redacted_share(y_true, y_pred) == pytest.approx(2 / 3)
    assert "privacy_redacted_share" in joint.METRICS
    with pytest.warns(RuntimeWarning, match="no sample was sent"):
        assert math.isnan(joint.privacy_redacted_share(y_true[3:], y_pred[3:]))
    with pytest.raises(CeprError, match=r"y_pred\[0\].*privacy_redacted"):
        joint.privacy_redacted_share(["L0"], [[True, None, _edge(), _cloud()]])


def test_the_cloud_module_prices_what_its_payload_policy_would_send(tmp_path):
    """Sample 0 has low risk, so AdaptivePayload sends its summary only; samples 1 and 2 (mid and high risk) also
    send the image, at 320x240 and at the base 640x480 q85. ``CloudModule.price`` gives those bytes by part, as
    the request carries them, without contacting the server; the edge records it for every sample and
    bandwidth_saving adds it up."""
    from cepr.cloud.module import CloudModule
    from cepr.records import PAYLOAD_PRICER

    rng = np.random.default_rng(0)
    frames = []
    for i in range(3):
        rgb = tmp_path / f"f{i}.png"
        assert cv2.imwrite(str(rgb), rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
        frames.append(rgb)
    base = PayloadConfig(mode="summary+image", resolution="640x480", quality=85)
    chain = payload_policy("AdaptivePayload", base)
    risks = [0.1, 0.5, 0.9]
    summaries = [{"risk": r, "object_fields": FIELDS, "objects": [["car", 3.0]]} for r in risks]
    payloads = [chain.choose(s).payload for s in summaries]
    assert [p.mode for p in payloads] == ["summary", "summary+image", "summary+image"]
    assert payloads[1].resolution != payloads[2].resolution

    def parts(i, p):
        n = {"image": 0, "summary": len(json.dumps(json.dumps(summaries[i], separators=(",", ":"))))}
        if p.sends_image:
            rgb = cv2.cvtColor(cv2.imread(str(frames[i])), cv2.COLOR_BGR2RGB)
            n["image"] = len(encode_image(rgb, p).data_url())
        return n

    cloud = CloudModule(backend="openai", base_url="http://127.0.0.1:9/v1", model="m", link="none",
                        payload="summary+image", resolution="640x480", quality=85, payload_policy="AdaptivePayload")
    try:
        assert PAYLOAD_PRICER.current == cloud.price  # published for an edge that runs under Ianvs
        for i in range(3):
            sample = {"rgb": str(frames[i]), "label": str(tmp_path / f"l{i}.png"), "task": "action", "key": f"k{i}"}
            state = EdgeState(summary=summaries[i], answer="go", camera={})
            assert cloud.price(sample, state) == parts(i, payloads[i])
    finally:
        cloud.cleanup()
    assert PAYLOAD_PRICER.current is None


def test_bandwidth_saving_adds_up_what_each_sample_sent_or_would_have():
    """Each sent sample against the payload it sent (a policy chose it), the unsent one with what the policy
    would have chosen for it, as recorded: the metric is arithmetic."""
    sent = [{"image": 0, "summary": 90}, {"image": 4000, "summary": 95}]
    overhead = [250, 350]
    up = [sum(p.values()) + o for p, o in zip(sent, overhead)]
    would = {"image": 9000, "summary": 99}

    def c(i):
        return _cloud(up=up[i], payload_bytes=sent[i], privacy_redacted=False)

    y_pred = [[True, None, _edge(), c(0)], [True, None, _edge(), c(1)], [False, None, _edge(send_bytes=would), None]]
    baseline = sum(up) + sum(would.values()) + np.mean(overhead)
    assert joint.bandwidth_saving(["L0", "L1", "L2"], y_pred) == pytest.approx(1 - sum(up) / baseline)
