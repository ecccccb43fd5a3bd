"""Budget: a cap on the cloud share over a sliding window, decided online, least confident first."""

from __future__ import annotations

import math
import threading
from collections import deque

from cepr.dispatch.policies import Policy, check_kwargs, register_policy
from cepr.edge.features import confidence
from cepr.errors import CeprError
from cepr.hyperparameters import positive_float, positive_int, unit_float


@register_policy("Budget", needs_edge_result=True)
class Budget(Policy):
    """Sends at most ``cap`` samples in any ``window`` consecutive samples, preferring the least confident.

    Reads from the edge result: ``confidence`` only. It sees one sample at a time and remembers only past
    samples (their confidences and its own decisions); the decision for sample t is

        hard iff  share of the last ``history`` confidences (before t) that are < confidence_t  is < ``max_share``
              and  the samples sent among the last ``window`` - 1 decisions, plus this one, <= cap

    where cap = floor(``max_share`` * ``window``), or, with ``max_uplink_bytes_per_s`` set, the smaller of that and
    floor(``max_uplink_bytes_per_s`` * ``frame_interval_s`` * ``window`` / ``request_bytes``) (a byte-rate budget
    turned into a share: frames arrive every ``frame_interval_s`` seconds and a cloud request carries
    ``request_bytes`` up). The first test keeps to the least confident ``max_share`` of recent frames, as far as the
    past predicts; the second guarantees that no window of ``window`` consecutive samples ever sends more than cap,
    whatever the confidences. The first sample has no history and is sent when the cap allows.

    Decisions depend on the order of the samples and are deterministic given it (under ``--concurrency`` > 1 the
    order is the order of arrival). ``reset()`` forgets the history (an offline sweep calls it before a new pass).

    Parameters: ``max_share`` (0.3), ``window`` (50), ``history`` (default: ``window``), ``max_uplink_bytes_per_s``
    (none), ``request_bytes`` (64000, about the median request of the default job's cloud-only case: the summary
    and a 640x480 JPEG), ``frame_interval_s`` (0.1)."""

    name = "Budget"

    def __init__(self, max_share=0.3, window=50, history=None, max_uplink_bytes_per_s=None, request_bytes=64000,
                 frame_interval_s=0.1, **kwargs):
        check_kwargs(self.name, kwargs, ("max_share", "window", "history", "max_uplink_bytes_per_s", "request_bytes",
                                         "frame_interval_s"))
        self.max_share = unit_float(self.name, "max_share", max_share)
        self.window = positive_int(self.name, "window", window)
        self.history = self.window if history in (None, "none") else positive_int(self.name, "history", history)
        self.request_bytes = positive_float(self.name, "request_bytes", request_bytes)
        self.frame_interval_s = positive_float(self.name, "frame_interval_s", frame_interval_s)
        self.max_uplink_bytes_per_s = (None if max_uplink_bytes_per_s in (None, "none") else
                                       positive_float(self.name, "max_uplink_bytes_per_s", max_uplink_bytes_per_s,
                                                      allow_zero=True))
        cap = math.floor(self.max_share * self.window + 1e-9)
        if self.max_uplink_bytes_per_s is not None:
            by_bytes = self.max_uplink_bytes_per_s * self.frame_interval_s * self.window / self.request_bytes
            cap = min(cap, math.floor(by_bytes + 1e-9))
        self.cap = int(cap)
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget every past sample."""
        with getattr(self, "_lock", threading.Lock()):
            self._confidences: deque[float] = deque(maxlen=self.history)
            self._sent: deque[bool] = deque(maxlen=max(self.window - 1, 0))
            self._sent_in_window = 0

    def hyperparameters(self) -> dict:
        return {"max_share": self.max_share, "window": self.window, "history": self.history,
                "max_uplink_bytes_per_s": self.max_uplink_bytes_per_s, "request_bytes": self.request_bytes,
                "frame_interval_s": self.frame_interval_s, "cap": self.cap}

    def __call__(self, x=None) -> bool:
        c = confidence(x, self.name)
        with self._lock:
            past = self._confidences
            below = sum(1 for v in past if v < c)
            wanted = (below / len(past) < self.max_share) if past else self.max_share > 0
            hard = wanted and self._sent_in_window + 1 <= self.cap
            if self._sent.maxlen:
                if len(self._sent) == self._sent.maxlen:
                    self._sent_in_window -= self._sent[0]
                self._sent.append(hard)
                self._sent_in_window += hard
            past.append(c)
        return hard

    def state(self) -> dict:
        """What it remembers (for a record or a test): confidences in the history, sends in the open window."""
        with self._lock:
            return {"history": len(self._confidences), "sent_in_window": self._sent_in_window}


def check_window_cap(decisions, window: int, cap: int) -> None:
    """Raise CeprError if some ``window`` consecutive decisions hold more than ``cap`` sends (a checker for tests
    and sweeps)."""
    d = [bool(v) for v in decisions]
    run = 0
    for i, v in enumerate(d):
        run += v
        if i >= window:
            run -= d[i - window]
        if run > cap:
            raise CeprError(f"Budget: {run} sends in the {window} samples ending at {i}, cap {cap}")
