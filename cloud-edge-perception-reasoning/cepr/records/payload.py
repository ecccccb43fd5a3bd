"""What one cloud request carries (``PayloadConfig``): the summary, the image, or both, and how the image is sent;
or the grounded VLM's projected vision tokens (``features``, FP16 or INT8).
Encoding lives in :mod:`cepr.cloud.payload`; the settings live here because payload policies choose them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cepr.data.layout import parse_resolution

MODES = ("summary", "summary+image", "image", "features")
IMAGE_CODECS = ("jpeg", "png", "webp")
FEATURE_CODECS = ("fp16", "int8")  # the grounded VLM's projected vision tokens (``features``): cepr.llm.grounded
CODECS = IMAGE_CODECS + FEATURE_CODECS


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

    @model_validator(mode="before")
    @classmethod
    def _features_default_to_fp16(cls, data):
        if isinstance(data, dict) and data.get("mode") == "features" and data.get("codec") is None:
            data = {**data, "codec": "fp16"}
        return data

    @model_validator(mode="after")
    def _codec_fits_the_mode(self):
        want = FEATURE_CODECS if self.mode == "features" else IMAGE_CODECS
        if self.codec not in want:
            raise ValueError(f"payload {self.mode} takes codec {' or '.join(want)}, not {self.codec!r}")
        return self

    @field_validator("resolution")
    @classmethod
    def _res(cls, v):
        if v is not None:
            parse_resolution(v)
        return v

    @property
    def sends_image(self) -> bool:
        return self.mode in ("summary+image", "image")

    @property
    def sends_summary(self) -> bool:
        return self.mode in ("summary", "summary+image")

    @property
    def sends_features(self) -> bool:
        """The grounded VLM's projected vision tokens instead of the image (split computing)."""
        return self.mode == "features"
