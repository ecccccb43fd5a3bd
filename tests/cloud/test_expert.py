"""The reference expert answers from the best information a request carries (docs/cloud.md)."""

import json

import pytest

from cepr.cloud.openai_backend import OpenAIBackendConfig, build_messages
from cepr.data.cloud_robotics import CloudRoboticsDataset, find_index
from cepr.data.tasks import TASKS, camera_for
from cepr.edge.summary import summarize
from cepr.records import CloudRequest


@pytest.fixture(scope="module")
def expert(cloud_model):
    from cepr.cloud.expert import ReferenceExpert

    return ReferenceExpert(cloud_model)


def messages(s, mode, depth=True, task="action"):
    cam = camera_for(s.sidecar, *s.label.shape[::-1])
    summ = summarize(s.label, s.depth if depth else None, cam)
    req = CloudRequest(task, TASKS[task].render_prompt(), TASKS[task].answers, summary=summ.to_dict(), image=s.rgb,
                       camera=cam.to_dict())
    cfg = OpenAIBackendConfig(base_url="http://unused", model="m", payload={"mode": mode, "codec": "png"})
    return build_messages(cfg, req), summ, cam


def test_source_follows_what_the_request_carries(expert, tiny_data):
    s = CloudRoboticsDataset(find_index(tiny_data, split="test"))[0]
    assert expert.answer(messages(s, "image")[0]).source == "image"
    assert expert.answer(messages(s, "summary")[0]).source == "summary"
    assert expert.answer(messages(s, "summary+image")[0]).source == "image+summary"
    # a summary with ground-plane distances has nothing to lend: the image decides alone
    assert expert.answer(messages(s, "summary+image", depth=False)[0]).source == "image"


def test_image_plus_summary_answers_from_own_objects_at_the_edges_distances(expert, tiny_data):
    from cepr.edge.summary import borrow_distances, summary_from_dict

    for s in list(CloudRoboticsDataset(find_index(tiny_data, split="test")))[:4]:
        for task in ("action", "nearest_obstacle"):
            msgs, summ, cam = messages(s, "summary+image", task=task)
            seg = expert.model(s.rgb)
            own = summarize(seg.label, None, cam, probs=seg.probs, mask_size=None,
                            min_confidence=expert.min_object_confidence)
            sent = summary_from_dict(summ.to_dict())  # what crossed the wire: the text form
            want = expert.planner.answer(borrow_distances(own, sent), (task,))[task].answer
            assert json.loads(expert.answer(msgs).text)["answer"] == want


def test_min_object_confidence_is_applied(cloud_model, tiny_data):
    from cepr.cloud.expert import MIN_OBJECT_CONFIDENCE, ReferenceExpert

    s = CloudRoboticsDataset(find_index(tiny_data, split="test"))[0]
    msgs = messages(s, "image")[0]
    everything = ReferenceExpert(cloud_model, min_object_confidence=0.0)
    nothing = ReferenceExpert(cloud_model, min_object_confidence=1.01)
    assert ReferenceExpert(cloud_model).min_object_confidence == MIN_OBJECT_CONFIDENCE
    # with every object dropped, nothing is in the path
    assert json.loads(nothing.answer(messages(s, "image", task="traversable")[0]).text)["answer"] == "yes"
    assert everything.answer(msgs).source == "image"
