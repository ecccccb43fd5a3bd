"""The metrics that depend on per-sample payloads: privacy_redacted_share, and bandwidth_saving when a payload
policy picks each request's payload (each sent sample against its own payload; unsent ones priced with what the
policy would have chosen)."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from cepr.cloud import pricing
from cepr.cloud.payload import encode_image
from cepr.dispatch.payload_policy import payload_policy
from cepr.errors import CeprError
from cepr.metrics import joint
from cepr.records import EDGE_STATE_KEY, EdgeState, PayloadConfig

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


def test_bandwidth_saving_with_a_payload_policy(tmp_path):
    """Sample 0 was sent as summary only (low risk), sample 1 with its 320x240 image (mid risk); sample 2 was not
    sent and has high risk, so it is priced with its image at 640x480 q85, as AdaptivePayload would have sent it."""
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

    def parts(i, p):
        n = len(json.dumps(json.dumps(summaries[i], separators=(",", ":"))))
        if p.sends_image:
            rgb = cv2.cvtColor(cv2.imread(str(frames[i])), cv2.COLOR_BGR2RGB)
            n += len(encode_image(rgb, p).data_url())
        return n

    overhead = [250, 350]  # prompt, camera, framing: the rest of each request
    up = [parts(i, payloads[i]) + overhead[i] for i in range(2)]

    def e(i):
        return {**_edge(rgb_path=str(frames[i])),
                EDGE_STATE_KEY: EdgeState(summary=summaries[i], answer="go", camera={})}

    def c(i):
        return _cloud(up=up[i], rgb_path=str(frames[i]), payload=payloads[i].model_dump(),
                      payload_base=base.model_dump(), payload_policy=chain.describe(), privacy_redacted=False)

    y_true = [str(tmp_path / f"l{i}.png") for i in range(3)]
    y_pred = [[True, None, e(0), c(0)], [True, None, e(1), c(1)], [False, None, e(2), None]]
    baseline = sum(up) + parts(2, payloads[2]) + np.mean(overhead)
    assert pricing.bandwidth_saving(y_true, y_pred) == pytest.approx(1 - sum(up) / baseline)
    # priced with the fixed base instead (no policy recorded), the unsent sample costs the same here: its risk
    # is high, so the policy chose the base's settings; a low-risk unsent sample would differ
    low = [[True, None, e(1), c(1)], [False, None, e(0), None]]
    cheap = up[1] + parts(0, payloads[0]) + overhead[1]
    assert pricing.bandwidth_saving(y_true[1::-1], low) == pytest.approx(1 - up[1] / cheap)
