"""The reference server refuses what it should not try to answer, with 4xx and a clear message, never 500:
bodies over the size limit (413), images over the pixel limit (judged from the header, before decoding),
questions over the length limit, malformed camera blocks and scene summaries (400)."""

import base64
import json
import struct
import zlib

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from cepr.cloud.expert import MAX_IMAGE_PIXELS, MAX_QUESTION_CHARS, image_size
from cepr.data.tasks import TASKS
from cepr.serve.cloud_server import MAX_BODY_MB, Limits, create_app

PROMPT = TASKS["action"].render_prompt() + "\nAllowed answers: " + ", ".join(TASKS["action"].answers) + "."


def png_url(rgb: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", rgb)
    assert ok
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode()


def chat(*parts) -> dict:
    content = [{"type": "text", "text": PROMPT}, *parts]
    return {"model": "m", "messages": [{"role": "system", "content": "answer in JSON"},
                                       {"role": "user", "content": content}]}


def text(t: str) -> dict:
    return {"type": "text", "text": t}


def image(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


@pytest.fixture(scope="module")
def client(cloud_model):
    return TestClient(create_app(cloud_model, limits=Limits(max_body_mb=0.5, max_image_pixels=200 * 200,
                                                            max_question_chars=2000)))


def post(client, body) -> tuple[int, str]:
    r = client.post("/v1/chat/completions", json=body)
    return r.status_code, (r.json().get("error") or {}).get("message", "")


def test_defaults_are_generous_for_real_requests_and_bounded():
    assert MAX_BODY_MB == Limits().max_body_mb == 20 and Limits().max_body_bytes == 20 * 1024 * 1024
    assert Limits().max_image_pixels == MAX_IMAGE_PIXELS == 4096 * 4096
    assert Limits().max_question_chars == MAX_QUESTION_CHARS >= 4 * len(PROMPT)


def test_a_good_request_is_answered(client):
    rgb = np.full((120, 160, 3), 90, np.uint8)
    status, msg = post(client, chat(image(png_url(rgb))))
    assert status == 200, msg


def test_body_over_the_limit_gets_413_without_being_read(client):
    big = chat(text("padding " * 70_000))  # ~560 KB of JSON, over 0.5 MB
    status, msg = post(client, big)
    assert status == 413 and "0.5 MB" in msg and "--max-body-mb" in msg
    # a body whose declared length is over the limit is refused from its header
    r = client.post("/v1/chat/completions", content=b"{}", headers={"content-length": str(10 * 1024 * 1024)})
    assert r.status_code == 413


def test_image_over_the_pixel_limit_gets_400(client):
    status, msg = post(client, chat(image(png_url(np.zeros((201, 200, 3), np.uint8)))))
    assert status == 400 and "200x201 pixels" in msg and "--max-image-pixels" in msg


def _png_header_only(w: int, h: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk


def test_a_huge_image_is_refused_from_its_header_before_decoding(client):
    url = "data:image/png;base64," + base64.b64encode(_png_header_only(100_000, 100_000)).decode()
    status, msg = post(client, chat(image(url)))
    assert status == 400 and "100000x100000" in msg
    status, msg = post(client, chat(image("data:image/gif;base64," + base64.b64encode(b"GIF89a....").decode())))
    assert status == 400 and "PNG, JPEG or WebP" in msg


@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp"])
def test_image_size_reads_the_header_of_each_codec_we_send(ext):
    rgb = np.random.default_rng(0).integers(0, 255, (23, 37, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(ext, rgb, [cv2.IMWRITE_WEBP_QUALITY, 101] if ext == ".webp" else [])
    assert ok and image_size(buf.tobytes()) == (37, 23)
    if ext == ".webp":  # lossy WebP has a different header (VP8 rather than VP8L)
        ok, buf = cv2.imencode(ext, rgb, [cv2.IMWRITE_WEBP_QUALITY, 80])
        assert image_size(buf.tobytes()) == (37, 23)


def test_question_over_the_length_limit_gets_400(client):
    body = chat()
    body["messages"][1]["content"][0]["text"] = PROMPT + " please" * 400
    status, msg = post(client, body)
    assert status == 400 and "--max-question-chars" in msg


@pytest.mark.parametrize("camera", ["not json", "[1, 2]", json.dumps({"focal": 1}), json.dumps({"fx": "wide"})])
def test_a_bad_camera_block_gets_400_not_500(client, camera):
    rgb = np.full((120, 160, 3), 90, np.uint8)
    status, msg = post(client, chat(text("Camera (JSON): " + camera), image(png_url(rgb))))
    assert status == 400 and "camera" in msg


@pytest.mark.parametrize("summary", ["{not json", json.dumps({"objects": "many"}), json.dumps({"free_space": 3})])
def test_a_bad_scene_summary_gets_400_not_500(client, summary):
    status, msg = post(client, chat(text("Scene summary from the robot's edge perception (JSON): " + summary)))
    assert status == 400 and "summary" in msg


def test_the_server_counts_the_request_bytes_it_received(client):
    from prometheus_client.parser import text_string_to_metric_families

    def received():
        fams = text_string_to_metric_families(client.get("/metrics").text)
        return next(s.value for f in fams for s in f.samples if s.name == "cepr_request_body_bytes_total")

    before = received()
    raw = json.dumps(chat(text("Camera (JSON): not json"))).encode()
    assert client.post("/v1/chat/completions", content=raw).status_code == 400
    assert received() - before == len(raw)
