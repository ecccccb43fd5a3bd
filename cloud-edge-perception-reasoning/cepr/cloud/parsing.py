"""Reading ``{"answer", "reason", "confidence"}`` out of whatever a language model wrote around it."""

from __future__ import annotations

import json
import re

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)


class AnswerParseError(ValueError):
    """The text holds no usable answer; the message says what was wrong (it becomes an ``error`` result)."""


def _candidates(text: str):
    for m in _FENCE.finditer(text):
        yield m.group(1)
    # every balanced {...} span, outermost first
    depth, start = 0, None
    in_str, esc = False, False
    for i, ch in enumerate(text):
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
            continue
        if ch == '"':
            in_str = True
        elif ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0:
                yield text[start:i + 1]


def parse_answer(text: str, answers: tuple[str, ...] | None = None) -> tuple[str, str, float | None]:
    """(answer, reason, confidence) from model output; ``answers`` is the task's closed answer set.

    Tolerates code fences, prose around the JSON, answer case and surrounding quotes/spaces, and a confidence
    given as a percentage. Raises AnswerParseError naming the problem otherwise."""
    if not text or not text.strip():
        raise AnswerParseError("empty response")
    doc = None
    for cand in _candidates(text):
        try:
            obj = json.loads(cand)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and "answer" in obj:
            doc = obj
            break
    if doc is None:
        raise AnswerParseError(f"no JSON object with an 'answer' key in: {text[:120]!r}")
    raw = doc["answer"]
    ans = str(raw).strip().strip("'\"").strip()
    if answers is not None:
        lookup = {a.lower(): a for a in answers}
        if ans.lower() not in lookup:
            raise AnswerParseError(f"answer {raw!r} is not one of {list(answers)}")
        ans = lookup[ans.lower()]
    conf = doc.get("confidence")
    if conf is not None:
        try:
            conf = float(str(conf).strip().rstrip("%"))
        except ValueError:
            conf = None
        else:
            if conf > 1.0:
                conf = conf / 100.0
            conf = min(1.0, max(0.0, conf))
    return ans, str(doc.get("reason", "")), conf
