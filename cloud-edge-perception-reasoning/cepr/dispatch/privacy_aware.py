"""PrivacyAware: a frame with people near the camera never leaves the edge as an image.

**Reads** the objects of the edge's scene summary (``SceneSummary.to_dict()``: rows under ``object_fields``), their
``class`` and ``distance_m``, nothing else. A sample is *sensitive* when an object of a human class (``person``,
``rider``: ``cepr.data.classes.HUMAN_IDS``) lies within ``radius_m`` of the camera; a person whose distance the edge
could not measure (``distance_m`` null) counts as near. The summary lists every person the edge segmented, whatever
their place (``SceneSummary.to_dict``); only a frame with more than 32 objects in or beside the path could push one
out (``cepr.edge.summary.rank_objects`` keeps people next). A sensitive sample
sends the scene summary only (the mode becomes ``summary``; other settings stay), and its cloud record says
``privacy_redacted: true``; the testenv metric ``privacy_redacted_share`` reports the share of the samples sent to the
cloud that went so. Other samples send what the previous payload policy (or the cloud module's settings) chose.

It is as good as the edge's segmentation: a person the edge does not see is not protected. Put it last in a chain
(``[AdaptivePayload, PrivacyAware]``) so nothing after it can add the image back.

Settings: ``radius_m`` (10 m by default: nearer than that a face covers a few dozen pixels of a 640x480 frame),
``classes`` (the human classes by default).
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cepr.data.classes import CLASSES, HUMAN_IDS
from cepr.dispatch.payload_policy import PayloadChoice, PayloadPolicy, register_payload_policy, summary_only
from cepr.errors import CeprError, unknown


def _human_names() -> tuple[str, ...]:
    return tuple(CLASSES[i].name for i in HUMAN_IDS)


def nearest_person_m(summary: dict, classes=None) -> float | None:
    """The distance (m) of the nearest object of ``classes`` (the human classes by default) in a scene summary's
    text form; ``inf`` for one whose distance is unknown (null), None when there is none."""
    classes = set(classes or _human_names())
    if not isinstance(summary, dict) or "objects" not in summary or "object_fields" not in summary:
        raise CeprError("PrivacyAware reads the scene summary's objects, but it has no objects/object_fields "
                        f"(keys: {sorted(summary) if isinstance(summary, dict) else type(summary).__name__})")
    fields = list(summary["object_fields"])
    try:
        ci, di = fields.index("class"), fields.index("distance_m")
    except ValueError:
        raise CeprError(f"PrivacyAware needs the object fields class and distance_m, the summary has {fields}") from None
    near = None
    for row in summary["objects"]:
        if row[ci] not in classes:
            continue
        d = row[di]
        d = math.inf if d is None or not math.isfinite(float(d)) else float(d)
        near = d if near is None else min(near, d)
    return near


@register_payload_policy("PrivacyAware", aliases=("privacy",))
class PrivacyAware(PayloadPolicy):
    """Summary only for a frame with a person within ``radius_m`` (or at an unknown distance)."""

    name = "PrivacyAware"

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)

        radius_m: float = Field(10.0, gt=0, description="a person nearer than this makes the frame sensitive")
        classes: tuple[str, ...] = Field(default_factory=_human_names, min_length=1)

        @field_validator("classes", mode="before")
        @classmethod
        def _known(cls, v):
            v = [v] if isinstance(v, str) else list(v)
            names = [c.name for c in CLASSES]
            for c in v:
                if c not in names:
                    raise ValueError(unknown("class", c, names, listing="classes"))
            return tuple(v)

    def sensitive(self, summary: dict) -> tuple[bool, float | None]:
        d = nearest_person_m(summary, self.cfg.classes)
        return (d is not None and (d == math.inf or d <= self.cfg.radius_m)), d

    def choose(self, summary: dict, choice: PayloadChoice) -> PayloadChoice:
        hit, d = self.sensitive(summary)
        if not hit:
            return choice
        where = "at an unknown distance" if d == math.inf else f"at {d:g} m"
        return PayloadChoice(summary_only(choice.payload),
                             f"PrivacyAware: a person {where} (radius {self.cfg.radius_m:g} m): summary only",
                             True, choice.notes + [choice.rule])

    def possible(self, base) -> list:
        return [base, summary_only(base)]
