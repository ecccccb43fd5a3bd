import base64

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from cepr.cloud.payload import build_user_content, encode_image
from cepr.records import PayloadConfig


@pytest.fixture
def frame():
    rng = np.random.default_rng(0)
    img = cv2.resize(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8), (640, 480), interpolation=cv2.INTER_LINEAR)
    return img


@pytest.mark.parametrize("codec,mime", [("jpeg", "image/jpeg"), ("png", "image/png"), ("webp", "image/webp")])
def test_codecs_round_trip_and_data_url(frame, codec, mime):
    enc = encode_image(frame, PayloadConfig(mode="image", codec=codec))
    assert enc.mime == mime and (enc.width, enc.height) == (640, 480)
    url = enc.data_url()
    assert url.startswith(f"data:{mime};base64,")
    raw = base64.b64decode(url.split(",", 1)[1])
    assert raw == enc.data
    back = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    assert back.shape == (480, 640, 3)
    if codec == "png":
        np.testing.assert_array_equal(cv2.cvtColor(back, cv2.COLOR_BGR2RGB), frame)


def test_resolution_scale_and_quality_change_the_bytes(frame):
    full = encode_image(frame, PayloadConfig(mode="image", quality=90))
    small = encode_image(frame, PayloadConfig(mode="image", resolution="320x240", quality=90))
    half = encode_image(frame, PayloadConfig(mode="image", scale=0.5, quality=90))
    low_q = encode_image(frame, PayloadConfig(mode="image", quality=30))
    assert (small.width, small.height) == (half.width, half.height) == (320, 240)
    assert len(small.data) < len(full.data) and len(low_q.data) < len(full.data)


def test_config_validation():
    with pytest.raises(ValidationError, match="mode"):
        PayloadConfig(mode="pixels")
    with pytest.raises(ValidationError, match="codec"):
        PayloadConfig(codec="gif")
    with pytest.raises(ValidationError, match="resolution"):
        PayloadConfig(resolution="big")
    with pytest.raises(ValidationError, match="Extra inputs"):
        PayloadConfig(moed="image")
    assert PayloadConfig(codec="JPG").codec == "jpeg"
    assert PayloadConfig(mode="summary").sends_summary and not PayloadConfig(mode="summary").sends_image


def test_user_content_parts(frame):
    img = encode_image(frame, PayloadConfig(mode="image", resolution="64x48"))
    parts = build_user_content("Is the path clear?", {"risk": 0.2, "objects": []}, img)
    assert [p["type"] for p in parts] == ["text", "text", "image_url"]
    assert '"risk":0.2' in parts[1]["text"]
    assert build_user_content("q", None, None) == [{"type": "text", "text": "q"}]
