"""Payload policies (cepr.dispatch.payload_policy, adaptive_payload, privacy_aware): which payload each request
sends, and that an image withheld for privacy is really absent from the request the backends build."""

import math

import numpy as np
import pytest

from cepr.cloud.openai_backend import OpenAIBackendConfig, build_messages
from cepr.dispatch.adaptive_payload import DEFAULT_RULES, AdaptivePayload
from cepr.dispatch.payload_policy import PAYLOAD_POLICY_REGISTRY, payload_policy
from cepr.dispatch.privacy_aware import PrivacyAware, nearest_person_m
from cepr.errors import CeprError
from cepr.records import CloudRequest, PayloadConfig

FIELDS = ["class", "distance_m", "bearing_deg", "left_m", "path_m", "right_m", "path_x_m", "confidence", "bbox_xywh"]
BASE = PayloadConfig(mode="summary+image", resolution="640x480", codec="jpeg", quality=85)


def summary(risk=0.0, objects=()):
    """A scene summary in its text form with ``objects`` given as (class, distance_m)."""
    rows = [[c, d, 0.0, None, d, None, 0.0, 1.0, [0, 0, 4, 4]] for c, d in objects]
    return {"image": [640, 480], "distances": "depth", "risk": risk, "uncertainty": 0.1, "corridor_m": [0.6, 1.2],
            "free_m": [10.0, 10.0, 10.0], "object_fields": FIELDS, "objects": rows, "objects_omitted": 0}


@pytest.mark.parametrize("risk", [0.0, 0.29, 0.3, 0.5, 0.69, 0.7, 1.0])
def test_adaptive_payload_follows_the_default_table(risk):
    choice = payload_policy("AdaptivePayload", BASE).choose(summary(risk))
    rule = next(r for r in DEFAULT_RULES if r.risk_below is None or risk < r.risk_below)
    assert choice.payload.mode == rule.mode
    if rule.mode != "summary":
        assert (choice.payload.resolution, choice.payload.quality) == (rule.resolution, rule.quality)
    assert choice.payload.codec == BASE.codec  # what a rule leaves unset comes from the module's settings
    assert not choice.privacy_redacted and choice.rule.startswith("AdaptivePayload")


def test_adaptive_rules_from_yaml_and_a_scale_replaces_the_base_resolution():
    chain = payload_policy({"name": "adaptive", "rules": [{"risk_below": 0.5, "mode": "summary"},
                                                          {"mode": "image", "scale": 0.5, "codec": "webp"}]}, BASE)
    assert chain.choose(summary(0.4)).payload.mode == "summary"
    high = chain.choose(summary(0.5)).payload
    assert (high.mode, high.scale, high.resolution, high.codec) == ("image", 0.5, None, "webp")
    assert {p.mode for p in chain.possible()} == {"summary", "image"}


@pytest.mark.parametrize("rules, message", [
    ([{"risk_below": 0.5, "mode": "summary"}], "last rule"),
    ([{"mode": "summary"}, {"mode": "image"}], "only the last rule"),
    ([{"risk_below": 0.6, "mode": "summary"}, {"risk_below": 0.4, "mode": "image"}, {"mode": "image"}], "increase"),
    ([{"mode": "sumary"}], "mode must be one of"),
    ([{"mode": "image", "qualty": 50}], "qualty"),
    ([], "empty"),
])
def test_bad_rule_tables_are_refused_naming_the_problem(rules, message):
    with pytest.raises(CeprError, match=message):
        payload_policy({"name": "AdaptivePayload", "rules": rules})


def test_unknown_names_and_settings_get_did_you_mean():
    with pytest.raises(CeprError, match="did you mean 'AdaptivePayload'"):
        payload_policy("AdaptivePaylod")
    with pytest.raises(CeprError, match="did you mean 'radius_m'"):
        payload_policy({"name": "PrivacyAware", "radius": 3})
    with pytest.raises(CeprError, match="did you mean 'person'"):
        payload_policy({"name": "PrivacyAware", "classes": ["persn"]})
    with pytest.raises(CeprError, match="`name`"):
        payload_policy({"radius_m": 3})
    assert {"AdaptivePayload", "PrivacyAware"} <= set(PAYLOAD_POLICY_REGISTRY.names())


def test_fixed_is_the_base_and_needs_no_summary():
    chain = payload_policy(None, BASE)
    assert chain.fixed and chain.describe() is None
    assert chain.choose(None).payload == BASE
    assert payload_policy("fixed", BASE).fixed
    with pytest.raises(CeprError, match="inference-then-mining"):
        payload_policy("PrivacyAware", BASE).choose(None, "k1")


def test_nearest_person_reads_people_only_and_unknown_distance_is_infinite():
    assert nearest_person_m(summary(objects=[("car", 1.0), ("person", 6.5), ("rider", 4.0)])) == 4.0
    assert nearest_person_m(summary(objects=[("car", 1.0)])) is None
    assert nearest_person_m(summary(objects=[("person", None)])) == math.inf
    with pytest.raises(CeprError, match="objects"):
        nearest_person_m({"risk": 0.1})


@pytest.mark.parametrize("objects, sensitive", [
    ([("person", 9.9)], True), ([("person", 10.1)], False), ([("rider", 2.0)], True), ([("person", None)], True),
    ([("car", 1.0), ("pole", 0.5)], False), ([], False),
])
def test_privacy_aware_withholds_the_image_when_a_person_is_near(objects, sensitive):
    choice = payload_policy({"name": "PrivacyAware", "radius_m": 10}, BASE).choose(summary(0.9, objects))
    assert choice.privacy_redacted is sensitive
    assert choice.payload.sends_image is not sensitive
    assert choice.payload.sends_summary


def test_privacy_comes_after_adaptive_in_a_chain_and_keeps_its_reason():
    chain = payload_policy(["AdaptivePayload", "PrivacyAware"], BASE)
    near = chain.choose(summary(0.9, [("person", 2.0)]))
    assert near.payload.mode == "summary" and near.privacy_redacted
    assert near.rule.startswith("PrivacyAware") and near.notes[-1].startswith("AdaptivePayload")
    far = chain.choose(summary(0.9, [("person", 30.0)]))
    assert far.payload.mode == "summary+image" and not far.privacy_redacted
    assert [d["name"] for d in chain.describe()] == ["AdaptivePayload", "PrivacyAware"]
    # what the records keep builds the same chain again (bandwidth_saving prices unsent samples with it)
    again = payload_policy(chain.describe(), BASE)
    assert again.choose(summary(0.5, [("person", 2.0)])).payload == chain.choose(summary(0.5, [("person", 2.0)])).payload


def test_no_image_part_leaves_for_a_redacted_frame():
    """What the backends put on the wire (build_messages: the openai, inprocess, transformers and vllm backends all
    build their request with it) carries no image_url part for a sensitive frame, and one for another frame."""
    cfg = OpenAIBackendConfig(base_url="http://127.0.0.1/v1", model="m", payload=BASE)
    chain = payload_policy("PrivacyAware", BASE)
    rgb = np.full((480, 640, 3), 100, np.uint8)
    for objects, image_parts in (([("person", 3.0)], 0), ([("person", 40.0)], 1)):
        s = summary(0.5, objects)
        choice = chain.choose(s)
        req = CloudRequest("path_hazard", "q", ("yes", "no"), summary=s, image=rgb, key="k", payload=choice.payload)
        parts = build_messages(cfg, req)[1]["content"]
        assert sum(1 for p in parts if p["type"] == "image_url") == image_parts
        assert "base64" not in str(parts) or image_parts


def test_privacy_aware_possible_payloads_include_summary_only():
    p = PrivacyAware()
    assert [q.mode for q in p.possible(BASE)] == ["summary+image", "summary"]
    assert AdaptivePayload().possible(BASE)[0].mode == "summary"
