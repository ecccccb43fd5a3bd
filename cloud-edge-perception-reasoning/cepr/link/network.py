"""A simple, explicit model of the robot's uplink: bandwidth, round-trip time, jitter and packet loss.

One request/response exchange costs

    RTT (+ jitter) + serialisation of the request up + serialisation of the response down
    + for every lost packet, a retransmission timeout of one RTT plus its own serialisation

with packets of ``mtu`` bytes. Random draws (jitter, losses) come from a generator seeded by
``(seed, key)``, so a sample's transfer time does not depend on the order or concurrency of the run.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from cepr.errors import unknown


class LinkConfig(BaseModel):
    """A link as YAML writes it; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "custom"
    uplink_mbps: float = Field(gt=0, description="edge -> cloud bandwidth, megabits per second")
    downlink_mbps: float = Field(gt=0, description="cloud -> edge bandwidth, megabits per second")
    rtt_ms: float = Field(ge=0, description="round-trip time")
    jitter_ms: float = Field(0.0, ge=0, description="standard deviation of the RTT (truncated at 0)")
    loss: float = Field(0.0, ge=0, lt=1, description="probability that a packet is lost and resent")
    mtu: int = Field(1400, gt=0, description="payload bytes per packet")


PRESETS: dict[str, LinkConfig] = {
    "ideal": LinkConfig(name="ideal", uplink_mbps=1e6, downlink_mbps=1e6, rtt_ms=0.0),
    "wifi": LinkConfig(name="wifi", uplink_mbps=100, downlink_mbps=200, rtt_ms=5, jitter_ms=2, loss=0.002),
    "5g": LinkConfig(name="5g", uplink_mbps=50, downlink_mbps=300, rtt_ms=15, jitter_ms=4, loss=0.001),
    "4g": LinkConfig(name="4g", uplink_mbps=10, downlink_mbps=30, rtt_ms=50, jitter_ms=12, loss=0.005),
    "congested": LinkConfig(name="congested", uplink_mbps=1, downlink_mbps=2, rtt_ms=150, jitter_ms=50, loss=0.03),
}


@dataclass(frozen=True)
class Transfer:
    up_bytes: int
    down_bytes: int
    rtt_ms: float
    up_ms: float
    down_ms: float
    retransmits: int
    retransmit_ms: float

    @property
    def total_ms(self) -> float:
        return self.rtt_ms + self.up_ms + self.down_ms + self.retransmit_ms


def _key_seed(seed: int, key) -> int:
    h = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little")


class Link:
    def __init__(self, config: LinkConfig | str | dict = "4g", seed: int = 0):
        if isinstance(config, str):
            config = config.lower()
            if config not in PRESETS:
                raise ValueError(unknown("link preset", config, PRESETS, listing="presets"))
            config = PRESETS[config]
        elif isinstance(config, dict):
            config = LinkConfig(**config)
        self.config = config
        self.seed = seed

    def _packets(self, n_bytes: int) -> int:
        return max(1, math.ceil(n_bytes / self.config.mtu)) if n_bytes > 0 else 0

    def transfer(self, up_bytes: int, down_bytes: int, key="") -> Transfer:
        """Time for one exchange of ``up_bytes`` up and ``down_bytes`` down; ``key`` names the sample."""
        if up_bytes < 0 or down_bytes < 0:
            raise ValueError(f"byte counts must be non-negative, got up={up_bytes} down={down_bytes}")
        c = self.config
        rng = np.random.default_rng(_key_seed(self.seed, key))
        rtt = max(0.0, c.rtt_ms + (rng.normal(0.0, c.jitter_ms) if c.jitter_ms else 0.0))
        up_ms = up_bytes * 8 / (c.uplink_mbps * 1e3)
        down_ms = down_bytes * 8 / (c.downlink_mbps * 1e3)
        lost_up = int(rng.binomial(self._packets(up_bytes), c.loss)) if c.loss else 0
        lost_down = int(rng.binomial(self._packets(down_bytes), c.loss)) if c.loss else 0
        per_up = min(c.mtu, up_bytes) * 8 / (c.uplink_mbps * 1e3) if up_bytes else 0.0
        per_down = min(c.mtu, down_bytes) * 8 / (c.downlink_mbps * 1e3) if down_bytes else 0.0
        retrans = lost_up * (c.rtt_ms + per_up) + lost_down * (c.rtt_ms + per_down)
        return Transfer(up_bytes, down_bytes, rtt, up_ms, down_ms, lost_up + lost_down, retrans)
