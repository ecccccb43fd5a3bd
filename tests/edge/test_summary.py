"""Scene summary: exact byte counts, lossless round trip, and answers equal to the task ground truth."""

import numpy as np
import pytest

from cepr.data.camera import Camera
from cepr.data.classes import class_id
from cepr.data.cloud_robotics import CloudRoboticsDataset, find_index
from cepr.data.tasks import TaskParams, answer_tasks, answers_for_sample, camera_for
from cepr.edge.summary import SceneSummary, risk_score, rle_decode, rle_encode, summarize


@pytest.mark.parametrize("shape", [(1, 1), (60, 80), (7, 300)])
def test_rle_round_trip(shape):
    rng = np.random.default_rng(0)
    m = np.repeat(rng.integers(0, 30, (shape[0], 1 + shape[1] // 10)), 10, axis=1)[:, : shape[1]].astype(np.uint8)
    data = rle_encode(m)
    np.testing.assert_array_equal(rle_decode(data, shape[1], shape[0]), m)


def test_rle_long_runs_and_errors():
    m = np.zeros((480, 640), np.uint8)
    data = rle_encode(m)
    assert len(data) == 1 + 3  # one run of 307200: class byte + 3-byte varint
    np.testing.assert_array_equal(rle_decode(data, 640, 480), m)
    with pytest.raises(ValueError, match="expected"):
        rle_decode(data, 10, 10)
    assert rle_encode(np.zeros((0, 0), np.uint8)) == b""


@pytest.fixture(scope="module")
def frames(tiny_data):
    return list(CloudRoboticsDataset(find_index(tiny_data, split="train")))


def test_summary_answers_equal_ground_truth_with_and_without_depth(frames):
    for s in frames:
        cam = camera_for(s.sidecar, *s.label.shape[::-1])
        for depth in (s.depth, None):
            sm = summarize(s.label, depth, cam)
            assert answer_tasks(list(sm.objects)) == answers_for_sample(s, use_depth=depth is not None)
            assert sm.distance_source == ("depth" if depth is not None else "ground_plane")


def test_msgpack_is_lossless_and_small(frames):
    for s in frames:
        sm = summarize(s.label, s.depth, camera_for(s.sidecar, *s.label.shape[::-1]), mask_size=(40, 30))
        blob = sm.to_bytes()
        back = SceneSummary.from_bytes(blob)
        assert back == sm
        assert back.to_bytes() == blob
        assert len(blob) < 4096
        mask = back.mask()
        assert mask.shape == (30, 40) and mask.max() < 30


def test_object_cap_keeps_people(frames):
    s = max(frames, key=lambda f: int((f.label == class_id("person")).sum()))
    cam = camera_for(s.sidecar, *s.label.shape[::-1])
    full = summarize(s.label, s.depth, cam)
    capped = summarize(s.label, s.depth, cam, max_objects=2)
    assert len(capped.objects) <= 2
    assert answer_tasks(list(capped.objects))["path_hazard"] == answer_tasks(list(full.objects))["path_hazard"]


def test_free_space_and_risk_follow_an_obstacle():
    cam = Camera.assumed(640, 480)
    v, u = np.mgrid[0:480, 0:640]
    _, _, t = cam.ground_points(u, v)
    label = np.where(np.isfinite(t), 0, 10).astype(np.uint8)
    empty = summarize(label, None, cam)
    assert empty.free_space == (20.0, 20.0, 20.0) and empty.risk == 0.0 and empty.objects == ()
    uu, vv, _ = cam.project(np.array([[-0.3, 0.0, 3.0], [0.3, 1.7, 3.0]]))
    label[max(0, int(vv[1])):int(vv[0]), int(uu[0]):int(uu[1])] = class_id("person")
    near = summarize(label, None, cam)
    assert abs(near.free_space[1] - 3.0) < 0.2 and near.free_space[0] == 20.0
    assert near.risk > 0.3
    assert near.to_dict()["objects"][0][0] == "person" and near.to_dict()["object_fields"][0] == "class"


def test_risk_weights_people_above_things():
    from cepr.data.geometry import BandProfile
    from cepr.edge.summary import SummaryObject

    def obj(cid, d):
        return SummaryObject(cid, 100, (0, 0, 1, 1), d, 0.0, 1.0, BandProfile(centre=d))

    p = TaskParams()
    assert risk_score([obj(class_id("person"), 2.0)], p) > risk_score([obj(class_id("dustbin"), 2.0)], p)
    assert risk_score([obj(class_id("person"), 1.0)], p) > risk_score([obj(class_id("person"), 5.0)], p)


def test_params_mismatch_is_refused(frames):
    s = frames[0]
    sm = summarize(s.label, s.depth, camera_for(s.sidecar, *s.label.shape[::-1]))
    with pytest.raises(ValueError, match="corridor"):
        sm.check_params(TaskParams(corridor_half_width=0.9))


def test_borrowed_distances_from_the_same_mask_equal_the_depth_summary(frames):
    """The cloud expert's rule: its objects, the edge's depth distances. From the same mask the borrowed
    summary answers every task as the depth summary does (the ground truth), whatever the ground plane says."""
    from cepr.edge.summary import borrow_distances

    differs = 0
    for s in frames:
        cam = camera_for(s.sidecar, *s.label.shape[::-1])
        measured, own = summarize(s.label, s.depth, cam), summarize(s.label, None, cam)
        fused = borrow_distances(own, measured)
        assert fused.extra["borrowed_distances"] == len(own.objects) > 0
        assert fused.distance_source == "depth"
        assert answer_tasks(list(fused.objects)) == answers_for_sample(s)
        key = lambda o: (o.bbox, o.band.left, o.band.centre, o.band.right)
        assert sorted(map(key, fused.objects)) == sorted(map(key, measured.objects))
        differs += answer_tasks(list(own.objects)) != answers_for_sample(s)
        # a ground-plane summary has no measurements to lend
        assert borrow_distances(own, own) is own
    assert differs > 0  # the ground plane alone does not always agree: borrowing changed answers


def test_borrowed_distances_scale_boxes_and_keep_unmatched_objects(frames):
    from cepr.edge.summary import borrow_distances

    def n_objects(f):
        return len(summarize(f.label, None, camera_for(f.sidecar, *f.label.shape[::-1])).objects)

    s = max((f for f in frames if n_objects(f) < 20), key=n_objects)  # well under the 32-object cap
    h, w = s.label.shape
    cam = camera_for(s.sidecar, w, h)
    import cv2

    big = cv2.resize(s.label, (2 * w, 2 * h), interpolation=cv2.INTER_NEAREST)
    own = summarize(big, None, cam.scaled(2 * w, 2 * h))  # the cloud saw the frame at twice the size
    measured = summarize(s.label, s.depth, cam)
    fused = borrow_distances(own, measured)
    # every measured object has its twice-as-large copy in the cloud's view, which takes its distances
    by_box = {o.bbox: o for o in fused.objects}
    assert len(measured.objects) > 3
    for m in measured.objects:
        o = by_box[tuple(2 * v for v in m.bbox)]
        assert (o.band, o.distance, o.class_id) == (m.band, m.distance, m.class_id)
    assert fused.extra["borrowed_distances"] >= len(measured.objects)
    # with nothing measured to match, every object keeps its own ground-plane distances
    lonely = borrow_distances(own, SceneSummary(w, h, (), (20.0,) * 3, 0.0, 0.0, own.corridor, "depth"))
    assert lonely.extra["borrowed_distances"] == 0 and lonely.distance_source == "ground_plane"
    assert [o.band for o in lonely.objects] == [o.band for o in own.objects]


def test_min_confidence_drops_unsure_objects(frames):
    s = max(frames, key=lambda f: len(summarize(f.label, None, camera_for(f.sidecar, *f.label.shape[::-1])).objects))
    h, w = s.label.shape
    cam = camera_for(s.sidecar, w, h)
    # probabilities at 1/4 resolution: 0.9 for the true class everywhere, except one class at 0.5
    low = s.label[::4, ::4]
    probs = np.full((30, *low.shape), 0.1 / 29, np.float32)
    np.put_along_axis(probs, low[None].astype(np.int64) % 30, 0.9, axis=0)
    full = summarize(s.label, None, cam, probs=probs)
    unsure = full.objects[0].class_id
    probs[unsure][low == unsure] = 0.5
    kept = summarize(s.label, None, cam, probs=probs, min_confidence=0.8)
    assert summarize(s.label, None, cam, probs=probs).objects  # nothing dropped by default
    assert {o.class_id for o in kept.objects} == {o.class_id for o in full.objects} - {unsure}


def test_text_form_round_trips_what_the_tasks_need_and_is_compact(frames):
    """The text form (what goes to a cloud model) keeps every object a task can depend on, with its band
    profile exactly, so the tasks answered from it equal those from the full summary; it is a fraction of the
    earlier per-object-dict form."""
    import json

    from cepr.edge.summary import summary_from_dict

    for s in frames:
        cam = camera_for(s.sidecar, *s.label.shape[::-1])
        for depth in (s.depth, None):
            full = summarize(s.label, depth, cam)
            text = full.to_dict()
            back = summary_from_dict(json.loads(json.dumps(text)))
            assert answer_tasks(list(back.objects)) == answer_tasks(list(full.objects))
            assert len(back.objects) + text["objects_omitted"] == len(full.objects)
            assert back.free_space == full.free_space and back.distance_source == full.distance_source
    with pytest.raises(ValueError, match="text form"):
        summary_from_dict({"objects": [["person"]]})
