"""A small text corpus in the suite's own language, generated in code: what the tiny test tokenizer learns from.

It holds the system prompt, the five task prompts with their allowed answers, scene summaries in their text form
(``SceneSummary.to_dict()`` as compact JSON) built from hand-made objects, and JSON answers such as
``{"answer": "yes", "reason": "...", "confidence": 0.9}``, each answer the task's true answer for that summary.
Nothing here needs a dataset on disk, and the same seed gives the same texts.
"""

from __future__ import annotations

import json
import math

import numpy as np

from cepr.cloud.base import DEFAULT_SYSTEM_PROMPT
from cepr.data.classes import CLASSES
from cepr.data.geometry import OBJECT_CLASS_IDS, BandProfile
from cepr.data.tasks import TASKS, TaskParams
from cepr.edge.summary import SceneSummary, SummaryObject, rank_objects
from cepr.records import CloudRequest

# the frame the synthetic summaries describe (the synthetic set's full resolution)
_W, _H = 640, 480


def _compact(doc) -> str:
    return json.dumps(doc, separators=(",", ":"))


def random_summary(rng: np.random.Generator, params=None):
    """A plausible ``SceneSummary`` made of 0-6 random objects (no mask), with free space and risk computed the
    way ``summarize`` computes them."""
    p = params or TaskParams()
    objs = []
    for _ in range(int(rng.integers(0, 7))):
        cid = int(OBJECT_CLASS_IDS[int(rng.integers(len(OBJECT_CLASS_IDS)))])
        dist = round(float(rng.uniform(0.8, 25.0)), 2)
        bands = [math.inf, math.inf, math.inf]
        for k in range(3):  # each band met with some probability, never nearer than the object itself
            if rng.random() < (0.5 if k == 1 else 0.3):
                bands[k] = round(dist + float(rng.uniform(0.0, 1.5)), 2)
        w, h = int(rng.integers(8, 200)), int(rng.integers(8, 240))
        x, y = int(rng.integers(0, _W - w)), int(rng.integers(_H // 4, _H - h))
        objs.append(SummaryObject(cid, w * h, (x, y, w, h), dist, round(float(rng.uniform(-35, 35)), 1),
                                  round(float(rng.uniform(0.4, 1.0)) * 255) / 255,
                                  BandProfile(*bands, round(float(rng.uniform(-0.6, 0.6)), 2))))
    kept, free, risk = rank_objects(objs, p)
    unc = round(float(rng.uniform(0.0, 0.4)) * 255) / 255
    return SceneSummary(_W, _H, tuple(kept), free, risk, unc, (p.corridor_half_width, p.side_band_width),
                        "depth" if rng.random() < 0.7 else "ground_plane")


def _reason(task: str, answer: str, s) -> str:
    near = sorted((o for o in s.objects if math.isfinite(o.band.centre)), key=lambda o: o.band.centre)
    where = f"{near[0].name} in the path at {near[0].band.centre:.1f} m" if near else "nothing in the path"
    return f"{where}; free space ahead {s.free_space[1]:.1f} m, so {task} is {answer}."


def build_corpus(seed: int = 0, n_summaries: int = 300) -> list[str]:
    """The corpus: a list of texts (documents), in a fixed order for a given seed."""
    rng = np.random.default_rng(seed)
    p = TaskParams()
    texts = [f"<|system|>\n{DEFAULT_SYSTEM_PROMPT}", " ".join(c.name for c in CLASSES)]
    requests = {}
    for name, task in TASKS.items():
        req = CloudRequest(name, task.render_prompt(p), task.answers)
        requests[name] = req
        texts += [req.user_prompt(), task.description, f"{name}: {', '.join(task.answers)}"]
        texts += [_compact({"answer": a}) for a in task.answers]
    names = list(TASKS)
    for i in range(n_summaries):
        s = random_summary(rng, p)
        summary = _compact(s.to_dict())
        name = names[i % len(names)]
        answer = TASKS[name].fn(list(s.objects), p)
        reply = _compact({"answer": answer, "reason": _reason(name, answer, s),
                          "confidence": round(float(rng.uniform(0.5, 1.0)), 2)})
        # the chat layout of cepr.llm.tiny.CHAT_TEMPLATE, less its special tokens
        texts.append(f"<|user|>\nScene summary: {summary}\n{requests[name].user_prompt()}\n<|assistant|>\n{reply}")
    return texts
