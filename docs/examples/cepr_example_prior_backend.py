"""Worked example (docs/architecture.md): a cloud backend in one file.

"prior" answers without any model: each task gets a fixed answer from its settings (else the first allowed
answer), a floor that any real cloud model should beat. It counts as bytes the JSON request it would send.
Use it from settings/cloud.yaml (or any cloud module): ``plugins: ["docs/examples/cepr_example_prior_backend.py"]``
and ``backend: prior``; its settings (``answers``, ``delay_ms``) become cloud-module hyperparameters.
"""

import json
import time

from pydantic import BaseModel, ConfigDict

from cepr.cloud.client import register_backend
from cepr.records import CloudRequest, CloudResult, Timings, Usage


class PriorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt setting is an error naming it

    answers: dict[str, str] = {}  # task -> answer
    delay_ms: float = 0.0  # pretend server time


@register_backend("prior", config_model=PriorConfig)
class PriorBackend:
    def __init__(self, config: dict):
        self.cfg = PriorConfig(**config)

    def infer(self, req: CloudRequest) -> CloudResult:
        t0 = time.perf_counter()
        answer = self.cfg.answers.get(req.task, req.answers[0])
        if answer not in req.answers:
            return CloudResult("error", reason=f"configured answer {answer!r} is not allowed for {req.task}")
        body = json.dumps({"task": req.task, "prompt": req.user_prompt(), "summary": req.summary})
        time.sleep(self.cfg.delay_ms / 1e3)
        reply = json.dumps({"answer": answer})
        return CloudResult("ok", answer, "prior", 1.0 / len(req.answers), reply, Usage(0, 0, "estimate"),
                           Timings(total_ms=1e3 * (time.perf_counter() - t0)), len(body), len(reply), "prior")

    def close(self) -> None:
        pass
