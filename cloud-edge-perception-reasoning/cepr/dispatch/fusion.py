"""Fusion rules: the final answer of a sample that both the edge and the cloud answered.

A rule is applied by the cloud module (its ``fusion`` hyperparameter) only when the cloud answered (status ``ok``)
and the edge had run on the sample (``inference-then-mining``); otherwise the answer is the one side's that exists
(a fallback or an unusable reply leaves the edge's answer, as always). Each rule is a function
``rule(task, answers, edge, cloud) -> "edge" | "cloud"`` naming the side whose answer stands, where ``edge`` and
``cloud`` are :class:`Side` (answer, confidence, distribution) and ``answers`` the task's allowed answers. When both
sides give the same answer the rule is not asked.

* ``cloud_wins`` (default; what cepr did before rules existed): the cloud's answer. Reads nothing.
* ``confidence``: reads both confidences (the edge's calibrated confidence and distribution over the answers; the
  cloud's self-reported ``confidence``). Each side's distribution is its confidence on its answer and the rest spread
  evenly over the task's other answers (the edge's own distribution where it reported one); the two are averaged
  and the answer of the two with the higher mean probability stands (for answer-plus-even-rest distributions, the
  side with the higher confidence). A tie, or a cloud reply without a confidence, leaves the cloud's answer.
* ``safety_first``: reads the two answers only. The more cautious answer stands; on equal caution, the cloud's.
  Caution per task: ``path_hazard`` yes > no; ``traversable`` no > yes; ``action`` stop > avoid_left = avoid_right
  > slow > go. So an edge "stop" is never overridden by a cloud "go", "slow" or "avoid_*", an edge hazard "yes" by
  a cloud "no", an edge "not traversable" by a cloud "yes". ``people_count`` and ``nearest_obstacle`` are not safety
  decisions here: the cloud's answer stands.

A new rule is one function decorated with ``@register_fusion_rule("name")`` (or an entry point in the group
``cepr.fusion_rules``).
"""

from __future__ import annotations

from dataclasses import dataclass

from cepr.errors import CeprError
from cepr.registry import Registry

FUSION_REGISTRY: Registry = Registry("fusion_rules", "fusion rule")
register_fusion_rule = FUSION_REGISTRY.register
DEFAULT_FUSION = "cloud_wins"

# safety_first: how cautious each answer is, per task (higher = more cautious); tasks not listed have no order
CAUTION: dict[str, dict[str, int]] = {
    "path_hazard": {"no": 0, "yes": 1},
    "traversable": {"yes": 0, "no": 1},
    "action": {"go": 0, "slow": 1, "avoid_left": 2, "avoid_right": 2, "stop": 3},
}


@dataclass(frozen=True)
class Side:
    """One side's answer to the sample's question."""

    answer: str
    confidence: float | None = None
    distribution: dict[str, float] | None = None  # over the task's answers (the edge's); None: built from confidence

    def probabilities(self, answers) -> dict[str, float] | None:
        if self.distribution:
            return {a: float(self.distribution.get(a, 0.0)) for a in answers}
        if self.confidence is None:
            return None
        others = [a for a in answers if a != self.answer]
        rest = (1.0 - self.confidence) / len(others) if others else 0.0
        return {a: (self.confidence if a == self.answer else rest) for a in answers}


@register_fusion_rule("cloud_wins")
def cloud_wins(task: str, answers, edge: Side, cloud: Side) -> str:
    """The cloud's answer stands (cepr's behaviour before fusion rules)."""
    return "cloud"


@register_fusion_rule("confidence", aliases=("confidence_weighted",))
def confidence(task: str, answers, edge: Side, cloud: Side) -> str:
    """Of the two answers, the one with the higher mean probability over both sides' distributions."""
    pc = cloud.probabilities(answers)
    pe = edge.probabilities(answers)
    if pc is None or pe is None:
        return "cloud"
    score = {a: 0.5 * (pe.get(a, 0.0) + pc.get(a, 0.0)) for a in (edge.answer, cloud.answer)}
    return "edge" if score[edge.answer] > score[cloud.answer] else "cloud"


@register_fusion_rule("safety_first")
def safety_first(task: str, answers, edge: Side, cloud: Side) -> str:
    """The more cautious answer (CAUTION); the cloud's on equal caution or for a task with no order."""
    order = CAUTION.get(task)
    if order is None:
        return "cloud"
    return "edge" if order.get(edge.answer, -1) > order.get(cloud.answer, -1) else "cloud"


def get_fusion_rule(name: str):
    """The rule registered as ``name``; a typo gets a "did you mean" and the list of rules."""
    try:
        return FUSION_REGISTRY.get(str(name))
    except CeprError as e:
        raise CeprError(f"fusion: {e}") from None


def fuse(rule: str, task: str, answers, edge: Side | None, cloud: Side | None) -> tuple[str | None, str]:
    """(final answer, where it came from: ``edge``, ``cloud`` or ``agree``) under ``rule``; with one side only,
    that side's."""
    if cloud is None or edge is None:
        side = cloud or edge
        return (side.answer if side else None), ("cloud" if cloud is not None else "edge")
    if edge.answer == cloud.answer:
        return cloud.answer, "agree"
    winner = get_fusion_rule(rule)(task, tuple(answers), edge, cloud)
    if winner not in ("edge", "cloud"):
        raise CeprError(f"fusion rule {rule!r} must return 'edge' or 'cloud', got {winner!r}")
    return (edge.answer if winner == "edge" else cloud.answer), winner
