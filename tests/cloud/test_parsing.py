import pytest

from cepr.cloud.parsing import AnswerParseError, parse_answer
from cepr.cloud.result import CloudResult

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
