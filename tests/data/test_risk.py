"""Risk summaries: the truth from the labels, the sentences built from it, and reading sentences back."""

from __future__ import annotations

import pytest

from cepr.data.risk import ACTION_WORDS, MAX_NAMED, RiskObject, parse_reason, risk_sentence, risk_truth

OBJS = [RiskObject("person", 3.24, "path"), RiskObject("car", 2.5, "right"),
        RiskObject("traffic sign", 5.0, "left"), RiskObject("dustbin", 5.9, "path")]


@pytest.mark.parametrize("action", list(ACTION_WORDS))
def test_every_wording_reads_back_as_written(action):
    for variant in range(6):
        for objs in (OBJS[:1], OBJS[:2], OBJS, []):
            text = risk_sentence(objs, action, variant)
            r = parse_reason(text)
            named = objs[:MAX_NAMED]
            assert r.mentions == {o.name: round(o.distance, 1) for o in named}, text
            assert r.action == action, text


def test_reading_the_reference_experts_reasons():
    r = parse_reason("person in the path at 3.2 m; free space ahead 4.0 m (action = avoid_left)")
    assert r.mentions == {"person": 3.2} and r.action == "avoid_left"
    r = parse_reason("traffic_sign in the path at 12.0 m; free space ahead 2.0 m (path_hazard = yes)")
    assert r.mentions == {"traffic sign": 12.0} and r.action is None
    r = parse_reason("nothing in the path; free space ahead 9.5 m (traversable = yes)")
    assert r.mentions == {} and r.action is None
    r = parse_reason("Two persons and a bus, no distance given. Go ahead")
    assert r.mentions == {"person": None, "bus": None} and r.action == "go"
    assert parse_reason(None).mentions == {} and parse_reason("").action is None


def test_risk_truth_holds_the_objects_the_tasks_react_to(tiny_data):
    """Wherever the truth says path_hazard yes, a person, rider or vehicle is among the risk objects; wherever
    action is slow or stop for a dynamic object, one is there too."""
    from cepr.data.classes import CLASSES, DYNAMIC_IDS
    from cepr.data.cloud_robotics import CloudRoboticsDataset, find_index
    from cepr.data.tasks import ground_truth

    dynamic = {CLASSES[i].name for i in DYNAMIC_IDS}
    ds = CloudRoboticsDataset(find_index(str(tiny_data), split="test"))
    seen = 0
    for f in ds.frames:
        truth = ground_truth(f.label_path)
        objs = risk_truth(f.label_path)
        assert objs == sorted(objs, key=lambda o: (o.distance, o.name))
        assert len({o.name for o in objs}) == len(objs)
        if truth["path_hazard"] == "yes":
            assert dynamic & {o.name for o in objs}, (f.label_path, objs)
            seen += 1
        if truth["traversable"] == "no":
            assert any(o.where == "path" and o.distance <= 3.0 for o in objs), (f.label_path, objs)
    assert seen > 0
