"""In-process speculative decoding with llama.cpp on the tiny models: the accept path and the acceptance count."""

from __future__ import annotations

import pytest

PROMPT = ("Question: Is there a person in the robot's path within 6 m? Allowed answers: yes, no. "
          "Question: Is there a person in the robot's path within 6 m?")


@pytest.fixture(scope="module")
def plain(tiny_llm):
    from cepr.llm.speculative import generate, make_generator

    return generate(*make_generator(tiny_llm["dir"] / "tiny-f32.gguf"), PROMPT, 32)


@pytest.mark.parametrize("k", [2, 4, 8])
def test_target_as_its_own_draft_keeps_every_draft(tiny_llm, plain, k):
    from cepr.llm.speculative import generate, make_generator

    g = generate(*make_generator(tiny_llm["dir"] / "tiny-f32.gguf", "draft", None, k=k), PROMPT, 32)
    assert g.tokens == plain.tokens and len(g.tokens) == 32
    assert g.proposed > 0 and g.acceptance == 1.0


def test_a_smaller_draft_and_prompt_lookup_leave_greedy_output_unchanged(tiny_llm, plain):
    from cepr.llm.speculative import generate, make_generator

    d = tiny_llm["dir"]
    small = generate(*make_generator(d / "tiny-f32.gguf", "draft", d / "draft-f32.gguf", k=4), PROMPT, 32)
    lookup = generate(*make_generator(d / "tiny-f32.gguf", "prompt-lookup", k=4), PROMPT, 32)
    for g in (small, lookup):
        assert g.tokens == plain.tokens
        assert g.acceptance is None or 0.0 <= g.acceptance <= 1.0
        assert g.accepted <= g.proposed
    assert small.proposed > 0  # a draft model always proposes; random weights share little, so few are kept


def test_acceptance_counting():
    from cepr.llm.speculative import Counting

    drafts = iter([[5, 6, 7], [9, 9]])
    c = Counting(lambda ids: next(drafts))
    c([1, 2])  # proposes 5 6 7
    c([1, 2, 5, 6, 8])  # the target kept 5 6, then wrote 8: 2 of 3 kept; proposes 9 9
    c.finish([1, 2, 5, 6, 8, 9])  # generation stopped one token later: 9 kept, the second 9 never checked
    assert (c.proposed, c.accepted) == (4, 3) and c.rate == 0.75


def test_unknown_method_is_refused(tiny_llm):
    from cepr.errors import CeprError
    from cepr.llm.speculative import make_generator

    with pytest.raises(CeprError, match="none, prompt-lookup or draft"):
        make_generator(tiny_llm["dir"] / "tiny-f32.gguf", "eagle3")
