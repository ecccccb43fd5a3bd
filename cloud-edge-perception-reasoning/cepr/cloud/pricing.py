"""The ``bandwidth_saving`` metric: uplink bytes against sending every sample with the same payload settings.

It prices the requests of samples that were not sent: each one's image encoded as its payload (or the payload
policy) would have chosen, and its scene summary, plus the mean of everything else in a request over the samples
sent. That needs the cloud's payload code, so the metric lives here and :mod:`cepr.metrics.joint` registers it
by name (imported when first used)."""

from __future__ import annotations

import json

import numpy as np

from cepr.cloud.payload import encode_image, payload_frame_path
from cepr.data.cloud_robotics import load_rgb
from cepr.dispatch.payload_policy import payload_policy
from cepr.errors import CeprError
from cepr.metrics.joint import _nan, _num, _Sample, _samples
from cepr.records import EDGE_STATE_KEY, PayloadConfig


def _payload_parts(s: _Sample, payload) -> int:
    """Bytes of a sample's request that depend on the sample: its encoded image (as a data URL) and its scene
    summary (as the JSON string it is embedded as), for the given payload settings."""
    n = 0
    rgb_path = next((d["rgb_path"] for d in s.results() if d.get("rgb_path")), None)
    if payload.sends_image:
        if rgb_path is None:
            raise CeprError(f"y_pred[{s.index}]: no rgb_path to price the image payload of a sample not sent")
        n += len(encode_image(load_rgb(payload_frame_path(rgb_path, s.label, payload.resolution)), payload).data_url())
    if payload.sends_summary:
        state = (s.edge or {}).get(EDGE_STATE_KEY)
        if state is None:
            raise CeprError(f"y_pred[{s.index}]: the edge result carries no scene summary to price")
        n += len(json.dumps(json.dumps(state.summary, separators=(",", ":"), allow_nan=False, default=str)))
    return n


def bandwidth_saving(y_true, y_pred) -> float:
    """1 - uplink bytes / the bytes of sending every sample to the cloud with the same payload settings.

    Samples sent count what they sent. A sample not sent is priced as its own request would have been: its own
    image and summary, encoded as the payload settings say, plus the mean of everything else in a request (prompt,
    camera, framing) over the samples sent in one attempt. 0 for CloudOnly, 1 when nothing is sent."""
    samples = _samples(y_true, y_pred)
    if not samples:
        return _nan("bandwidth_saving over no samples is undefined")
    sent = [s for s in samples if s.cloud is not None]
    up = sum(_num(s.cloud, "bytes_up", s) for s in sent)
    if up == 0:
        return 1.0  # nothing crossed the link
    unsent = [s for s in samples if s.cloud is None]
    if not unsent:
        return 0.0
    if any(not s.cloud.get("payload") for s in sent):
        return _nan("bandwidth_saving: the cloud results do not record their payload settings")
    # each sample sent is measured against the payload it sent (a payload policy chooses it per sample); a sample
    # not sent is priced with the payload the module would have chosen for it: its base settings, through its
    # payload policy when it has one (cepr.dispatch.payload_policy)
    first = sent[0].cloud
    chain = None
    if first.get("payload_policy"):
        chain = payload_policy(first["payload_policy"], PayloadConfig(**(first.get("payload_base") or first["payload"])))
    base = PayloadConfig(**(first.get("payload_base") or first["payload"]))
    clean = [s for s in sent if s.cloud.get("attempts", 1) == 1 and _num(s.cloud, "bytes_up", s) > 0] or sent
    overhead = float(np.mean([_num(s.cloud, "bytes_up", s) - _payload_parts(s, PayloadConfig(**s.cloud["payload"]))
                              for s in clean]))
    baseline = up + sum(_payload_parts(s, _would_send(s, base, chain)) + overhead for s in unsent)
    return 1.0 - up / baseline


def _would_send(s: _Sample, base, chain):
    """The payload a sample not sent would have sent: ``base``, or what the payload policy ``chain`` picks from
    the sample's edge summary."""
    if chain is None:
        return base
    state = (s.edge or {}).get(EDGE_STATE_KEY)
    if state is None:
        raise CeprError(f"y_pred[{s.index}]: the edge result carries no scene summary for the payload policy "
                        "to price its payload")
    return chain.choose(state.summary, str(s.index)).payload
