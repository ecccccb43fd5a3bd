"""What one cloud request carries (``PayloadConfig``): the summary, the image, or both, and how the image is sent.
Encoding lives in :mod:`cepr.cloud.payload`; the settings live here because payload policies choose them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cepr.data.layout import parse_resolution

MODES = ("summary", "summary+image", "image")
CODECS = ("jpeg", "png", "webp")


class PayloadConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: str = "summary"
    resolution: str | None = Field(None, description="WxH to send the image at, e.g. 640x480")
    scale: float | None = Field(None, gt=0, le=4, description="or: scale the frame by this factor")
    codec: str = "jpeg"
    quality: int = Field(85, ge=1, le=100, description="JPEG/WebP quality")

    @field_validator("mode")
    @classmethod
    def _mode(cls, v):
        if v not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {v!r}")
        return v

    @field_validator("codec")
    @classmethod
    def _codec(cls, v):
        v = v.lower().replace("jpg", "jpeg")
        if v not in CODECS:
            raise ValueError(f"codec must be one of {CODECS}, got {v!r}")
        return v

    @field_validator("resolution")
    @classmethod
    def _res(cls, v):
        if v is not None:
            parse_resolution(v)
        return v

    @property
    def sends_image(self) -> bool:
        return self.mode != "summary"

    @property
    def sends_summary(self) -> bool:
        return self.mode != "image"
