import pytest
from pydantic import ValidationError

from cepr.link import PRESETS, Link, LinkConfig


def test_serialisation_time_follows_bandwidth():
    link = Link(LinkConfig(uplink_mbps=8, downlink_mbps=80, rtt_ms=20))
    t = link.transfer(1_000_000, 1_000)  # 8 Mbit up at 8 Mbps = 1 s; 8 kbit down at 80 Mbps = 0.1 ms
    assert t.up_ms == pytest.approx(1000.0)
    assert t.down_ms == pytest.approx(0.1)
    assert t.total_ms == pytest.approx(1020.1)
    assert t.retransmits == 0


def test_deterministic_per_key_whatever_the_order():
    link = Link("4g", seed=7)
    a = [link.transfer(50_000, 500, key=k).total_ms for k in range(20)]
    b = [Link("4g", seed=7).transfer(50_000, 500, key=k).total_ms for k in reversed(range(20))][::-1]
    assert a == b
    assert len(set(a)) > 1  # jitter varies from sample to sample
    assert a != [Link("4g", seed=8).transfer(50_000, 500, key=k).total_ms for k in range(20)]


def test_loss_adds_retransmissions_on_average():
    lossy = Link(LinkConfig(uplink_mbps=10, downlink_mbps=10, rtt_ms=50, loss=0.2))
    ts = [lossy.transfer(140_000, 0, key=k) for k in range(200)]
    mean_retx = sum(t.retransmits for t in ts) / len(ts)
    assert 15 < mean_retx < 25  # 100 packets x 20%
    assert all(t.retransmit_ms == pytest.approx(t.retransmits * (50 + 1400 * 8 / 1e4)) for t in ts)


def test_presets_are_ordered_by_quality():
    times = {n: Link(n).transfer(200_000, 1_000, key=1).total_ms for n in ("wifi", "5g", "4g", "congested")}
    assert times["wifi"] < times["5g"] < times["4g"] < times["congested"]
    assert Link("ideal").transfer(10**6, 10**6).total_ms < 0.1
    assert set(PRESETS) >= {"4g", "5g", "wifi", "congested"}


def test_bad_config_is_refused_clearly():
    assert Link("4G").config.name == "4g"
    with pytest.raises(ValueError, match="did you mean 'wifi'"):
        Link("wfi")
    with pytest.raises(ValidationError, match="bandwith"):
        LinkConfig(uplink_mbps=1, downlink_mbps=1, rtt_ms=1, bandwith=3)
    with pytest.raises(ValidationError):
        LinkConfig(uplink_mbps=0, downlink_mbps=1, rtt_ms=1)
    with pytest.raises(ValueError, match="non-negative"):
        Link("4g").transfer(-1, 0)
    assert Link({"uplink_mbps": 2, "downlink_mbps": 2, "rtt_ms": 10}).config.rtt_ms == 10
