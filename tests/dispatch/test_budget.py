"""Budget: never more than its cap in any window, least confident first, online and deterministic."""

import numpy as np
import pytest
from routing_inputs import edge

from cepr.dispatch import Budget
from cepr.dispatch.budget import check_window_cap
from cepr.errors import CeprError


def run(policy, confidences):
    return [policy(edge(confidence=float(c), key=f"k{i}")) for i, c in enumerate(confidences)]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("max_share,window", [(0.3, 50), (0.1, 10), (0.5, 7), (0.25, 1), (1.0, 5)])
def test_never_exceeds_the_cap_over_any_window(seed, max_share, window):
    rng = np.random.default_rng(seed)
    # adversarial streams too: long runs of low confidence, ties, sorted
    streams = [rng.random(600), np.sort(rng.random(300)), np.zeros(200), np.repeat(rng.random(30), 10)]
    for conf in streams:
        p = Budget(max_share=max_share, window=window)
        d = run(p, conf)
        check_window_cap(d, window, p.cap)
        assert p.cap == int(np.floor(max_share * window + 1e-9))


def test_checker_catches_a_violation():
    with pytest.raises(CeprError, match="3 sends in the 4 samples ending at 2, cap 2"):
        check_window_cap([1, 1, 1, 0], 4, 2)


def test_prefers_the_least_confident():
    rng = np.random.default_rng(0)
    conf = rng.random(2000)
    p = Budget(max_share=0.2, window=100)
    d = np.array(run(p, conf))
    share = d.mean()
    assert 0.1 < share <= 0.2
    # those it sent are far less confident than those it kept
    assert np.median(conf[d]) < 0.2 < np.median(conf[~d])


def test_decides_from_past_samples_only_and_is_deterministic():
    rng = np.random.default_rng(1)
    conf = rng.random(300)
    full = run(Budget(max_share=0.3, window=20), conf)
    # decisions up to t do not change when later samples change (online)
    prefix = run(Budget(max_share=0.3, window=20), np.concatenate([conf[:150], rng.random(150)]))
    assert prefix[:150] == full[:150]
    p = Budget(max_share=0.3, window=20)
    assert run(p, conf) == full
    p.reset()
    assert run(p, conf) == full


def test_byte_rate_cap():
    # 60 kB per request, 0.1 s per frame, 120 kB/s: at most 2 sends per second = 20% of frames
    p = Budget(max_share=1.0, window=50, max_uplink_bytes_per_s=120000, request_bytes=60000, frame_interval_s=0.1)
    assert p.cap == 10
    d = run(p, np.zeros(500))
    check_window_cap(d, 50, 10)
    assert sum(d) == 100  # every window full: exactly 10 per 50


def test_bad_input_and_parameters():
    with pytest.raises(CeprError, match="window must be an integer >= 1"):
        Budget(window=0)
    with pytest.raises(CeprError, match="max_share must be in"):
        Budget(max_share=30)
    with pytest.raises(CeprError, match="did you mean 'max_share'"):
        Budget(max_shar=0.3)
    e = edge()
    del e["confidence"]
    with pytest.raises(CeprError, match="confidence, which is missing"):
        Budget()(e)
    with pytest.raises(CeprError, match=r"confidence must be in \[0, 1\]"):
        Budget()(edge(confidence=1.5))
