"""NetworkAware: unsure samples go only when the expected round trip on the link fits the deadline."""

import math

import pytest
from routing_inputs import edge

from cepr.dispatch import NetworkAware
from cepr.errors import CeprError
from cepr.link.network import PRESETS


def expected(link, request, reply, cloud, edge_ms):
    c = PRESETS[link]
    up, down = c.uplink_mbps * 1e3, c.downlink_mbps * 1e3
    retrans = sum(c.loss * math.ceil(b / c.mtu) * (c.rtt_ms + min(c.mtu, b) * 8 / r)
                  for b, r in ((request, up), (reply, down)) if b)
    return edge_ms + c.rtt_ms + request * 8 / up + reply * 8 / down + retrans + cloud


@pytest.mark.parametrize("link", list(PRESETS))
def test_expected_time_follows_the_link_model(link):
    p = NetworkAware(link=link, request_bytes=50000, reply_bytes=4000, cloud_ms=80)
    assert p.expected_ms(edge(latency_ms=25)) == pytest.approx(expected(link, 50000, 4000, 80, 25))


def test_sends_unsure_samples_only_when_the_deadline_fits():
    unsure, sure = edge(confidence=0.3), edge(confidence=0.9)
    fast = NetworkAware(link="wifi", deadline_ms=300)
    slow = NetworkAware(link="congested", deadline_ms=300)  # 64 kB at 1 Mbit/s alone is 512 ms
    assert fast(unsure) is True and fast(sure) is False
    assert slow(unsure) is False and slow(sure) is False
    # the same link flips with the deadline, at exactly the expected time
    t = NetworkAware(link="4g").expected_ms(unsure)
    assert NetworkAware(link="4g", deadline_ms=t)(unsure) is True
    assert NetworkAware(link="4g", deadline_ms=t - 1e-6)(unsure) is False


def test_edge_latency_counts_unless_told_not_to():
    p = NetworkAware(link="4g", count_edge=False)
    e = edge(latency_ms=10_000)
    assert p.expected_ms(e) == pytest.approx(NetworkAware(link="4g").expected_ms(edge(latency_ms=0)))
    del e["latency_ms"]
    assert p.expected_ms(e) > 0
    with pytest.raises(CeprError, match="latency_ms.*missing.*count_edge: false"):
        NetworkAware()(dict(e, confidence=0.1))


def test_custom_link_and_bad_parameters():
    p = NetworkAware(link={"uplink_mbps": 8, "downlink_mbps": 8, "rtt_ms": 0}, request_bytes=1000, reply_bytes=0,
                     cloud_ms=0, count_edge=False)
    assert p.expected_ms(edge()) == pytest.approx(1.0)
    with pytest.raises(CeprError, match="did you mean 'wifi'"):
        NetworkAware(link="wiffi")
    with pytest.raises(CeprError, match="bad link"):
        NetworkAware(link={"uplink_mbps": -1, "downlink_mbps": 1, "rtt_ms": 1})
    with pytest.raises(CeprError, match="deadline_ms"):
        NetworkAware(deadline_ms=0)
    with pytest.raises(CeprError, match="count_edge must be true or false"):
        NetworkAware(count_edge="maybe")
    with pytest.raises(CeprError, match="confidence must be a finite number"):
        NetworkAware()(edge(confidence="low"))
