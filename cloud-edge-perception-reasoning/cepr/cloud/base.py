"""The request every cloud backend answers, and the prompt text shared by all of them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_SYSTEM_PROMPT = (
    "You are the cloud reasoning module of a quadruped robot walking through an industrial park. You receive a "
    "question about what the robot sees, a scene summary from its on-board perception and/or a camera image. "
    "In the summary, each row of objects follows object_fields; path_m, left_m and right_m are the nearest "
    "distances in metres at which the object meets the robot's path corridor and the bands beside it (null: it "
    "does not), free_m the free distance ahead in those three bands. "
    "Answer with one JSON object and nothing else: "
    '{"answer": <one of the allowed answers>, "reason": <one short sentence>, "confidence": <0 to 1>}.'
)


@dataclass
class CloudRequest:
    task: str
    prompt: str
    answers: tuple[str, ...]
    summary: dict | None = None  # SceneSummary.to_dict()
    image: np.ndarray | None = None  # RGB frame, encoded by the payload settings
    camera: dict | None = None  # the robot's camera (Camera.to_dict()): lets the cloud measure distances
    key: str = ""  # sample id: names the request in logs and seeds the link model
    # this request's payload settings (cepr.cloud.payload.PayloadConfig), chosen per sample by the cloud module's
    # payload policy (cepr.dispatch.payload_policy); None: the backend's own ``payload`` setting
    payload: object | None = None

    def user_prompt(self) -> str:
        return f"{self.prompt}\nAllowed answers: {', '.join(self.answers)}."
