import pytest

from cepr.cloud.parsing import AnswerParseError, parse_answer
from cepr.records import CloudResult

ACTIONS = ("stop", "slow", "go", "avoid_left", "avoid_right")


@pytest.mark.parametrize("text", [
    '{"answer": "stop", "reason": "person ahead", "confidence": 0.9}',
    'Sure! ```json\n{"answer": "stop", "reason": "person ahead", "confidence": 0.9}\n``` Hope this helps.',
    'The robot should stop.\n{"reason": "person ahead", "answer": " STOP ", "confidence": "90%"}',
    '```\n{"answer": "Stop", "reason": "person ahead", "confidence": 90}\n```',
])
def test_tolerant_parsing(text):
    ans, reason, conf = parse_answer(text, ACTIONS)
    assert ans == "stop" and reason == "person ahead" and conf == pytest.approx(0.9)


def test_braces_inside_strings_and_nested_objects():
    text = 'note {not json} then {"answer": "go", "reason": "clear {really}", "extra": {"a": 1}}'
    assert parse_answer(text, ACTIONS)[:2] == ("go", "clear {really}")


@pytest.mark.parametrize("text,expected", [
    # JSON inside prose, on both sides, across lines
    ('I looked at the scene.\nMy answer: {"answer": "slow", "reason": "bend"}\nThanks!', ("slow", "bend")),
    # braces, quotes and escapes inside strings do not end the object
    (r'{"answer": "go", "reason": "a } and a { and \"{\"}\" in a string"}', ("go", 'a } and a { and "{"}" in a string')),
    # a code fence with a language tag, after a fence that holds no JSON
    ('```text\nnothing here\n```\n```JSON\n{"answer": "avoid_left", "reason": "cone"}\n```', ("avoid_left", "cone")),
    # two objects: the first with an answer wins
    ('{"answer": "stop", "reason": "first"} or {"answer": "go", "reason": "second"}', ("stop", "first")),
    # an object without an answer, then one with it
    ('{"thinking": "person at 2 m"} {"answer": "stop", "reason": "person"}', ("stop", "person")),
    # a broken object, then a valid one
    ('{answer: stop} {"answer": "stop", "reason": "person"', None),
    ('{"answer": "stop", "reason": } {"answer": "go", "reason": "clear"}', ("go", "clear")),
    # an answer nested inside another object is not an answer of its own
    ('{"result": {"answer": "go"}} {"answer": "stop", "reason": "outer"}', ("stop", "outer")),
])
def test_first_json_object_with_an_answer(text, expected):
    if expected is None:
        with pytest.raises(AnswerParseError, match="no JSON object"):
            parse_answer(text, ACTIONS)
    else:
        assert parse_answer(text, ACTIONS)[:2] == expected


def test_first_object_with_an_answer_decides_even_when_that_answer_is_not_allowed():
    with pytest.raises(AnswerParseError, match="'run' is not one of"):
        parse_answer('{"answer": "run"} {"answer": "stop"}', ACTIONS)


def test_missing_confidence_is_none_and_bad_confidence_ignored():
    assert parse_answer('{"answer": "yes"}', ("yes", "no"))[2] is None
    assert parse_answer('{"answer": "yes", "confidence": "high"}', ("yes", "no"))[2] is None
    assert parse_answer('{"answer": "yes", "confidence": 7}', ("yes", "no"))[2] == pytest.approx(0.07)


@pytest.mark.parametrize("text,msg", [
    ("", "empty"),
    ("I think you should stop.", "no JSON object"),
    ('{"reason": "no answer key"}', "no JSON object"),
    ('{"answer": "run"}', "not one of"),
    ('{"answer": "stop"', "no JSON object"),
])
def test_garbage_raises_a_clear_error(text, msg):
    with pytest.raises(AnswerParseError, match=msg):
        parse_answer(text, ACTIONS)


def test_result_status_is_checked():
    assert CloudResult("fallback", reason="timeout").answer is None
    with pytest.raises(ValueError, match="status"):
        CloudResult("maybe")


def test_control_characters_inside_strings_are_read():
    # vLLM's JSON-schema grammar lets a model write raw control characters in the reason (strict JSON refuses them)
    text = '{"answer": "go",\r\n\t "confidence": 0,\r\n\t "reason": "a\x10b\x0cc"}'
    assert parse_answer(text, ("go", "stop")) == ("go", "a\x10b\x0cc", 0.0)
