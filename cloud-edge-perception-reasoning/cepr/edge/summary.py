"""The compact scene summary the edge sends instead of pixels.

From a class mask (predicted or true), class probabilities and depth (or the ground plane), it keeps:

* objects: class, pixel area, bbox, distance, bearing, confidence, and the object's ``BandProfile`` (nearest
  distance in the left band, the corridor and the right band, mean lateral position in the corridor), which
  is all the tasks need, so the local planner and a cloud model can answer from the summary alone;
* free space ahead in the left, centre and right corridors; a risk score in [0, 1]; the mean pixel entropy in
  the region ahead (a cue for the planner's confidence);
* the class mask at a coarse resolution, run-length encoded.

Values are quantised when the summary is built (centimetres, tenths of a degree, 1/255 steps), so msgpack
encoding is lossless: ``SceneSummary.from_bytes(s.to_bytes()) == s``, and ``len(s.to_bytes())`` is exactly
what crosses the wire.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import msgpack
import numpy as np

from cepr.data.camera import Camera
from cepr.data.classes import CLASSES, DYNAMIC_IDS, HUMAN_IDS
from cepr.data.classes import class_id as class_id_of
from cepr.data.geometry import INF, BandProfile, extract_objects
from cepr.data.tasks import TaskParams

FORMAT_VERSION = 1
MAX_RANGE_M = 20.0  # free space is reported up to this distance


def _cm(x: float) -> float:
    return INF if not math.isfinite(x) else round(x * 100) / 100


def _enc_cm(x: float) -> int:
    return -1 if not math.isfinite(x) else round(x * 100)


def _dec_cm(v: int) -> float:
    return INF if v < 0 else v / 100


# ---- mask run-length encoding -------------------------------------------------------------------------

def rle_encode(mask: np.ndarray) -> bytes:
    """Row-major runs of a uint8 class mask as (class byte, LEB128 length) pairs."""
    flat = np.ascontiguousarray(mask, dtype=np.uint8).ravel()
    if flat.size == 0:
        return b""
    change = np.nonzero(np.diff(flat))[0] + 1
    starts = np.concatenate([[0], change])
    lengths = np.diff(np.concatenate([starts, [flat.size]]))
    out = bytearray()
    for cls, n in zip(flat[starts].tolist(), lengths.tolist()):
        out.append(cls)
        while True:
            b = n & 0x7F
            n >>= 7
            out.append(b | (0x80 if n else 0))
            if not n:
                break
    return bytes(out)


def rle_decode(data: bytes, width: int, height: int) -> np.ndarray:
    vals, lens = [], []
    i, n = 0, len(data)
    while i < n:
        cls = data[i]
        i += 1
        length, shift = 0, 0
        while True:
            b = data[i]
            i += 1
            length |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        vals.append(cls)
        lens.append(length)
    flat = np.repeat(np.array(vals, np.uint8), np.array(lens, np.int64))
    if flat.size != width * height:
        raise ValueError(f"RLE mask decodes to {flat.size} pixels, expected {width}x{height}")
    return flat.reshape(height, width)


# ---- summary ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SummaryObject:
    class_id: int
    area: int
    bbox: tuple[int, int, int, int]
    distance: float  # metres, nearest footprint point (inf: no footprint)
    bearing_deg: float
    confidence: float  # mean winning-class probability over the object's pixels (1.0 from a true mask)
    band: BandProfile

    @property
    def name(self) -> str:
        return CLASSES[self.class_id].name

    def profile(self, half_width: float, side_width: float) -> BandProfile:
        return self.band  # computed for the summary's own corridor; SceneSummary checks the params match

    def pack(self) -> list:
        b = self.band
        return [self.class_id, self.area, list(self.bbox), _enc_cm(self.distance), round(self.bearing_deg * 10),
                round(self.confidence * 255), _enc_cm(b.left), _enc_cm(b.centre), _enc_cm(b.right),
                round(b.centre_x * 100)]

    @classmethod
    def unpack(cls, v: list) -> SummaryObject:
        return cls(v[0], v[1], tuple(v[2]), _dec_cm(v[3]), v[4] / 10, v[5] / 255,
                   BandProfile(_dec_cm(v[6]), _dec_cm(v[7]), _dec_cm(v[8]), v[9] / 100))


@dataclass(frozen=True)
class SceneSummary:
    width: int
    height: int
    objects: tuple[SummaryObject, ...]
    free_space: tuple[float, float, float]  # metres free ahead: left band, corridor, right band
    risk: float
    uncertainty: float  # mean normalised pixel entropy ahead of the robot (0 from a true mask)
    corridor: tuple[float, float]  # (half width, side band width) the band profiles were computed for
    distance_source: str  # "depth" or "ground_plane"
    mask_size: tuple[int, int] = (0, 0)
    mask_rle: bytes = b""
    extra: dict = field(default_factory=dict, compare=False)

    def check_params(self, params: TaskParams) -> None:
        if (params.corridor_half_width, params.side_band_width) != self.corridor:
            raise ValueError(f"summary was built for corridor {self.corridor}, tasks ask for "
                             f"{(params.corridor_half_width, params.side_band_width)}")

    def mask(self) -> np.ndarray | None:
        if not self.mask_rle:
            return None
        return rle_decode(self.mask_rle, *self.mask_size)

    def to_bytes(self) -> bytes:
        doc = {"v": FORMAT_VERSION, "size": [self.width, self.height],
               "objects": [o.pack() for o in self.objects],
               "free": [_enc_cm(x) for x in self.free_space], "risk": round(self.risk * 100),
               "unc": round(self.uncertainty * 255), "corr": [round(c * 100) for c in self.corridor],
               "dist": self.distance_source[0], "mask": [list(self.mask_size), self.mask_rle]}
        return msgpack.packb(doc, use_bin_type=True)

    @classmethod
    def from_bytes(cls, data: bytes) -> SceneSummary:
        d = msgpack.unpackb(data, raw=False)
        if d.get("v") != FORMAT_VERSION:
            raise ValueError(f"scene summary format {d.get('v')!r}, this cepr reads {FORMAT_VERSION}")
        (mw, mh), rle = d["mask"]
        return cls(d["size"][0], d["size"][1], tuple(SummaryObject.unpack(o) for o in d["objects"]),
                   tuple(_dec_cm(x) for x in d["free"]), d["risk"] / 100, d["unc"] / 255,
                   tuple(c / 100 for c in d["corr"]), {"d": "depth", "g": "ground_plane"}[d["dist"]],
                   (mw, mh), bytes(rle))

    def to_dict(self) -> dict:
        """The text form, what goes on the wire to a cloud model (as compact JSON) and what a language model reads.

        Compact: objects are rows under one list of field names, and only the objects a task can depend on are
        listed (those in or beside the robot's path, and people, whom people_count counts anywhere); the others
        are counted in ``objects_omitted``. Distances in metres (cm precision), null where there is none. About
        a quarter of the earlier per-object-dict form; ``summary_from_dict`` reads it back."""
        def m(x):
            return None if not math.isfinite(x) else x

        listed = [o for o in self.objects if math.isfinite(o.band.nearest) or o.class_id in HUMAN_IDS]
        return {"image": [self.width, self.height], "distances": self.distance_source, "risk": self.risk,
                "uncertainty": round(self.uncertainty, 3), "corridor_m": list(self.corridor),
                "free_m": [m(x) for x in self.free_space], "object_fields": list(OBJECT_FIELDS),
                "objects": [[o.name, m(o.distance), o.bearing_deg, m(o.band.left), m(o.band.centre),
                             m(o.band.right), o.band.centre_x, round(o.confidence, 2), list(o.bbox)] for o in listed],
                "objects_omitted": len(self.objects) - len(listed)}


# the columns of a text-form object row (SceneSummary.to_dict): what a cloud prompt explains
OBJECT_FIELDS = ("class", "distance_m", "bearing_deg", "left_m", "path_m", "right_m", "path_x_m", "confidence",
                 "bbox_xywh")


def risk_score(objects, params: TaskParams) -> float:
    """max over objects of w * exp(-d / s): people and vehicles (w 1, s 3 m) count more than static things
    (w 0.5, s 2 m); an object only beside the corridor counts at half weight."""
    risk = 0.0
    for o in objects:
        w, s = (1.0, 3.0) if o.class_id in DYNAMIC_IDS else (0.5, 2.0)
        b = o.band
        d = b.centre if math.isfinite(b.centre) else min(b.left, b.right)
        if not math.isfinite(d):
            continue
        if not math.isfinite(b.centre):
            w *= 0.5
        risk = max(risk, w * math.exp(-max(d, 0.0) / s))
    return round(risk, 2)


def _object_confidence(probs, lowres, cls, bbox, width, height) -> float:
    if probs is None:
        return 1.0
    _, ph, pw = probs.shape
    x, y, w, h = bbox
    x0, y0 = int(x * pw / width), int(y * ph / height)
    x1, y1 = max(x0 + 1, math.ceil((x + w) * pw / width)), max(y0 + 1, math.ceil((y + h) * ph / height))
    region = probs[cls, y0:y1, x0:x1]
    own = lowres[y0:y1, x0:x1] == cls
    mine = region[own]
    return float(mine.sum() / mine.size) if mine.size else float(region.max())  # the mean, bit for bit


def ahead_uncertainty(probs: np.ndarray | None) -> float:
    """Mean normalised entropy of the class probabilities in the lower-central third of the image."""
    if probs is None:
        return 0.0
    c, h, w = probs.shape
    p = probs[:, h // 2:, w // 3: 2 * w // 3]
    ent = -(p * np.log(np.clip(p, 1e-8, 1.0))).sum(0) / math.log(c)
    return float(ent.mean())


def rank_objects(objects, params: TaskParams, max_objects: int = 32):
    """(kept objects, free space, risk) from a frame's summary objects.

    Keeps what the tasks need when there are many: objects in or beside the path, then people (people_count
    counts them anywhere), then the rest by distance."""
    out = sorted(objects, key=lambda o: (0 if math.isfinite(o.band.nearest) else 1 if o.class_id in HUMAN_IDS
                                         else 2, o.band.nearest, o.distance))[:max_objects]
    free = tuple(_cm(min([MAX_RANGE_M] + [getattr(o.band, k) for o in out])) for k in ("left", "centre", "right"))
    return out, free, risk_score(out, params)


def summarize(label: np.ndarray, depth: np.ndarray | None, camera: Camera, probs: np.ndarray | None = None,
              params: TaskParams | None = None, mask_size: tuple[int, int] | None = (80, 60),
              max_objects: int = 32, min_confidence: float = 0.0) -> SceneSummary:
    """Build the summary of one frame. ``probs`` (C, h, w) from the network, or None for a true mask.

    ``min_confidence`` drops objects whose mean winning-class probability is lower (speckles of a confident
    class inside another region); the edge keeps everything (0), the cloud expert sets it."""
    p = params or TaskParams()
    height, width = label.shape
    objs = extract_objects(label, depth, camera, clearance=p.clearance)
    lowres = probs.argmax(0) if probs is not None else None
    out = []
    for o in objs:
        b = o.profile(p.corridor_half_width, p.side_band_width)
        band = BandProfile(_cm(b.left), _cm(b.centre), _cm(b.right), round(b.centre_x * 100) / 100)
        conf = _object_confidence(probs, lowres, o.class_id, o.bbox, width, height)
        if conf < min_confidence:
            continue
        out.append(SummaryObject(o.class_id, o.area, tuple(int(v) for v in o.bbox), _cm(o.distance),
                                 round(o.bearing_deg * 10) / 10, round(conf * 255) / 255, band))
    out, free, risk = rank_objects(out, p, max_objects)
    mask_rle, msize = b"", (0, 0)
    if mask_size is not None:
        msize = tuple(mask_size)
        src = lowres.astype(np.uint8) if lowres is not None else label
        coarse = cv2.resize(src, msize, interpolation=cv2.INTER_NEAREST)
        mask_rle = rle_encode(coarse)
    unc = round(ahead_uncertainty(probs) * 255) / 255
    return SceneSummary(width, height, tuple(out), free, risk, unc,
                        (p.corridor_half_width, p.side_band_width), "depth" if depth is not None else "ground_plane",
                        msize, mask_rle)


def summary_from_dict(d: dict) -> SceneSummary:
    """Inverse of ``SceneSummary.to_dict`` (the text form a cloud model receives); the mask and the omitted
    objects are not included, and an object's pixel area is its box's. A malformed summary raises ValueError."""

    def f(x):
        return INF if x is None else float(x)

    try:
        fields = list(d["object_fields"])
        objs = []
        for row in d["objects"]:
            o = dict(zip(fields, row))
            x, y, w, h = (int(v) for v in o["bbox_xywh"])
            objs.append(SummaryObject(class_id_of(o["class"]), w * h, (x, y, w, h), f(o["distance_m"]),
                                      float(o["bearing_deg"]), float(o["confidence"]),
                                      BandProfile(f(o["left_m"]), f(o["path_m"]), f(o["right_m"]),
                                                  float(o.get("path_x_m") or 0.0))))
        fs = d["free_m"]
        return SceneSummary(int(d["image"][0]), int(d["image"][1]), tuple(objs), (f(fs[0]), f(fs[1]), f(fs[2])),
                            float(d["risk"]), float(d["uncertainty"]), tuple(d.get("corridor_m", (0.6, 1.2))),
                            d["distances"])
    except (KeyError, TypeError, IndexError) as e:
        raise ValueError(f"not a scene summary in cepr's text form: {type(e).__name__}: {e}") from None


def _bbox_iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def borrow_distances(own: SceneSummary, measured: SceneSummary, params: TaskParams | None = None,
                     min_iou: float = 0.3) -> SceneSummary:
    """``own``'s objects (what is there, from a better segmentation) placed with ``measured``'s distances.

    Each object of ``own`` takes the distance, bearing and band profile of the ``measured`` object whose
    bounding box overlaps it most (IoU >= ``min_iou``, boxes scaled to the same image size); objects with no
    such partner keep their own. Used by the cloud expert: its segmentation of the image is better than the
    edge's, but without depth it can only place objects on the ground plane, while a depth-based summary
    measured where they are. A ``measured`` summary with ground-plane distances has nothing to lend."""
    if measured.distance_source != "depth" or not own.objects:
        return own
    sx, sy = own.width / measured.width, own.height / measured.height
    boxes = [(x * sx, y * sy, w * sx, h * sy) for x, y, w, h in (m.bbox for m in measured.objects)]
    out, borrowed = [], 0
    for o in own.objects:
        ious = [_bbox_iou(o.bbox, b) for b in boxes]
        j = int(np.argmax(ious)) if ious else -1
        if j >= 0 and ious[j] >= min_iou:
            m = measured.objects[j]
            o = SummaryObject(o.class_id, o.area, o.bbox, m.distance, m.bearing_deg, o.confidence, m.band)
            borrowed += 1
        out.append(o)
    p = params or TaskParams()
    kept, free, risk = rank_objects(out, p, max(len(out), 1))
    return SceneSummary(own.width, own.height, tuple(kept), free, risk, own.uncertainty, own.corridor,
                        "depth" if borrowed else own.distance_source, own.mask_size, own.mask_rle,
                        {**own.extra, "borrowed_distances": borrowed})
