"""NetworkAware: send an unsure sample only if the expected cloud round trip fits the latency deadline."""

from __future__ import annotations

import math
from collections.abc import Mapping

from cepr.dispatch.policies import Policy, check_kwargs, register_policy
from cepr.edge.features import confidence, edge_result, number
from cepr.errors import CeprError, unknown
from cepr.hyperparameters import positive_float, unit_float


@register_policy("NetworkAware", needs_edge_result=True)
class NetworkAware(Policy):
    """Hard (cloud) iff ``confidence < threshold`` AND ``expected_ms <= deadline_ms``, where

        expected_ms = edge latency_ms (when ``count_edge``) + RTT + request_bytes * 8 / uplink
                      + reply_bytes * 8 / downlink + expected retransmissions + cloud_ms

    with the bandwidths (bits/ms from Mbit/s) and RTT of ``link`` (a preset of ``cepr.link.network``: ideal, wifi,
    5g, 4g, congested, or a mapping of ``LinkConfig`` fields, as the cloud module's ``link``), and the expected
    retransmissions loss * packets * (RTT + one packet's serialisation), packets = ceil(bytes / mtu), both ways.
    It uses expected values (no jitter draw), so the decision is a pure function of the edge result.

    Reads from the edge result: ``confidence`` and, with ``count_edge`` (default true), ``latency_ms`` (the edge
    compute already spent on the sample). Nothing else: the request size and the cloud time are parameters.

    Parameters: ``threshold`` (0.6), ``deadline_ms`` (300), ``link`` (4g), ``request_bytes`` (64000, about the
    median request of the default job's cloud-only case: summary + 640x480 JPEG q85), ``reply_bytes`` (6000),
    ``cloud_ms`` (70, about the reference expert's median server time there), ``count_edge`` (true).
    ``expected_ms(x)`` gives the figure for one edge result."""

    name = "NetworkAware"
    order_independent = True  # decides from the sample alone: `cepr run --cluster` may split its cases

    def __init__(self, threshold=0.6, deadline_ms=300.0, link="4g", request_bytes=64000, reply_bytes=6000,
                 cloud_ms=70.0, count_edge=True, **kwargs):
        check_kwargs(self.name, kwargs, ("threshold", "deadline_ms", "link", "request_bytes", "reply_bytes",
                                         "cloud_ms", "count_edge"))
        from cepr.link.network import PRESETS, LinkConfig  # pydantic: only when the policy is built

        self.threshold = unit_float(self.name, "threshold", threshold)
        self.deadline_ms = positive_float(self.name, "deadline_ms", deadline_ms)
        self.request_bytes = positive_float(self.name, "request_bytes", request_bytes, allow_zero=True)
        self.reply_bytes = positive_float(self.name, "reply_bytes", reply_bytes, allow_zero=True)
        self.cloud_ms = positive_float(self.name, "cloud_ms", cloud_ms, allow_zero=True)
        if isinstance(count_edge, str) and count_edge.strip().lower() in ("true", "false"):
            count_edge = count_edge.strip().lower() == "true"
        if not isinstance(count_edge, bool):
            raise CeprError(f"{self.name}: count_edge must be true or false, got {count_edge!r}")
        self.count_edge = count_edge
        if isinstance(link, str):
            if link.lower() not in PRESETS:
                raise CeprError(f"{self.name}: " + unknown("link preset", link, PRESETS, listing="presets"))
            self.link = PRESETS[link.lower()]
        elif isinstance(link, Mapping):
            try:
                self.link = LinkConfig(**link)
            except ValueError as e:
                raise CeprError(f"{self.name}: bad link: {e}") from None
        else:
            raise CeprError(f"{self.name}: link must be a preset name ({', '.join(PRESETS)}) or a mapping of link "
                            f"fields, got {link!r}")
        self.link_ms = self._link_ms()

    def hyperparameters(self) -> dict:
        return {"threshold": self.threshold, "deadline_ms": self.deadline_ms, "link": self.link.name,
                "request_bytes": self.request_bytes, "reply_bytes": self.reply_bytes, "cloud_ms": self.cloud_ms,
                "count_edge": self.count_edge}

    def _link_ms(self) -> float:
        """Expected transfer time of one exchange on the link, with the cloud's time: all but the edge's part."""
        c = self.link
        up_bits_per_ms, down_bits_per_ms = c.uplink_mbps * 1e3, c.downlink_mbps * 1e3
        up_ms = self.request_bytes * 8 / up_bits_per_ms
        down_ms = self.reply_bytes * 8 / down_bits_per_ms
        retrans = 0.0
        for n_bytes, rate in ((self.request_bytes, up_bits_per_ms), (self.reply_bytes, down_bits_per_ms)):
            if n_bytes > 0 and c.loss:
                packets = math.ceil(n_bytes / c.mtu)
                retrans += c.loss * packets * (c.rtt_ms + min(c.mtu, n_bytes) * 8 / rate)
        return c.rtt_ms + up_ms + down_ms + retrans + self.cloud_ms

    def expected_ms(self, x) -> float:
        """Expected end-to-end latency (ms) of this sample if it were sent."""
        edge_ms = 0.0
        if self.count_edge:
            res = edge_result(x, self.name)
            if "latency_ms" not in res:
                raise CeprError(f"{self.name} reads the edge result's latency_ms (count_edge: true), which is "
                                f"missing (keys: {sorted(map(str, res))}); set count_edge: false to ignore it")
            edge_ms = number(res["latency_ms"], self.name, "latency_ms")
        return edge_ms + self.link_ms

    def __call__(self, x=None) -> bool:
        if confidence(x, self.name) >= self.threshold:
            return False
        return self.expected_ms(x) <= self.deadline_ms
