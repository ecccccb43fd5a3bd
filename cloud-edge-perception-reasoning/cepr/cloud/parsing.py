"""Reading ``{"answer", "reason", "confidence"}`` out of whatever a language model wrote around it."""

from __future__ import annotations

import json

# strict=False: control characters inside strings are read, not refused. vLLM's JSON-schema grammar lets a model
# write them raw (seen in the tiny model's reason), and they never carry the answer.
_DECODER = json.JSONDecoder(strict=False)


class AnswerParseError(ValueError):
    """The text holds no usable answer; the message says what was wrong (it becomes an ``error`` result)."""


def _objects(text: str):
    """Every JSON object in the text, in order: decoded from each ``{`` by ``raw_decode``; after one decodes,
    the scan goes on past its end (objects nested in it are part of it, not answers of their own)."""
    i = text.find("{")
    while i != -1:
        try:
            obj, end = _DECODER.raw_decode(text, i)
        except json.JSONDecodeError:
            i = text.find("{", i + 1)
            continue
        yield obj
        i = text.find("{", end)


def parse_answer(text: str, answers: tuple[str, ...] | None = None) -> tuple[str, str, float | None]:
    """(answer, reason, confidence) from model output; ``answers`` is the task's closed answer set.

    The first JSON object with an ``answer`` key counts, wherever it is (in code fences, with prose around it).
    Tolerates answer case and surrounding quotes/spaces, and a confidence given as a percentage. Raises
    AnswerParseError naming the problem otherwise."""
    if not text or not text.strip():
        raise AnswerParseError("empty response")
    doc = next((obj for obj in _objects(text) if "answer" in obj), None)
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
