"""Task answer balance over a dataset, and agreement of the synthetic sidecar cache with the task functions."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from cepr.data.tasks import TASK_NAMES, TASKS, TaskParams, answers_for_sample


@dataclass
class TaskBalance:
    frames: int = 0
    counts: dict[str, Counter] = field(default_factory=lambda: {t: Counter() for t in TASK_NAMES})
    sidecar_frames: int = 0  # frames whose sidecar caches answers
    sidecar_agree: Counter = field(default_factory=Counter)  # task -> frames where cache == recomputed
    depth_frames: int = 0  # frames with depth, where the ground-plane answers are compared too
    ground_plane_agree: Counter = field(default_factory=Counter)  # task -> frames where no-depth == depth answer

    def majority_share(self, task: str) -> float:
        c = self.counts[task]
        return max(c.values()) / self.frames if self.frames else float("nan")

    def to_dict(self) -> dict:
        return {
            "frames": self.frames,
            "answers": {t: {a: self.counts[t].get(a, 0) for a in TASKS[t].answers if self.counts[t].get(a, 0)}
                        for t in TASK_NAMES},
            "majority_share": {t: round(self.majority_share(t), 4) for t in TASK_NAMES},
            "sidecar_frames": self.sidecar_frames,
            "sidecar_agreement": {t: (self.sidecar_agree[t] / self.sidecar_frames if self.sidecar_frames else None)
                                  for t in TASK_NAMES},
            "depth_frames": self.depth_frames,
            "ground_plane_agreement": {t: (self.ground_plane_agree[t] / self.depth_frames if self.depth_frames
                                           else None) for t in TASK_NAMES},
        }


def task_balance(samples, params: TaskParams | None = None) -> TaskBalance:
    """Recompute every task's answer for each sample (an iterable of loaded Samples).

    Where a sample has depth, the answers are also computed without it (ground-plane distance, as on the real
    set) and their agreement with the depth answers is counted.
    """
    out = TaskBalance()
    for s in samples:
        answers = answers_for_sample(s, params)
        out.frames += 1
        for t, a in answers.items():
            out.counts[t][a] += 1
        if s.depth is not None:
            out.depth_frames += 1
            flat = answers_for_sample(s, params, use_depth=False)
            for t in TASK_NAMES:
                out.ground_plane_agree[t] += int(flat[t] == answers[t])
        cached = (s.sidecar or {}).get("answers")
        if isinstance(cached, dict):
            out.sidecar_frames += 1
            for t in TASK_NAMES:
                out.sidecar_agree[t] += int(cached.get(t) == answers[t])
    return out
