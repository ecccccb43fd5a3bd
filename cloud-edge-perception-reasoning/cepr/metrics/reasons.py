"""Testenv metrics of the reasons behind the answers: the risk summary's objects, distances and action.

Per sample, the reason of the side whose answer stood (the cloud's ``reason`` when it answered, else the edge's
risk summary, ``reason`` in its result) is read by ``cepr.data.risk.parse_reason`` and scored against the
frame's risk objects (``cepr.data.risk.risk_truth``: the label mask and depth, or the ground plane, with the
tasks' distances):

* ``reason_hazard_precision`` / ``reason_hazard_recall`` / ``reason_hazard_f1``: the classes named against the
  classes in or beside the path, summed over the samples that carry a reason (micro-averaged);
* ``reason_distance_mae_m``: for each named class that is there, the stated distance against its true one;
* ``reason_action_agreement``: on the ``action`` samples, the action the reason states against the answer given
  (a reason that states none disagrees).

NaN (with a warning) where no sample carries a reason, or nothing is there to average.
"""

from __future__ import annotations

import numpy as np

from cepr.data.risk import parse_reason, risk_truth
from cepr.metrics.joint import _nan, _samples, answered_by_edge, register_metric


def _reasons(y_true, y_pred):
    """(sample, reason text) for every sample whose answering side gave a reason."""
    out = []
    for s in _samples(y_true, y_pred):
        side = s.edge if answered_by_edge(s) else s.cloud
        text = (side or {}).get("reason")
        if text:
            out.append((s, text))
    return out


def score_reasons(texts, truths, actions=None) -> dict:
    """The reason scores of parallel lists: ``texts`` the reasons (None: none given), ``truths`` each one's risk
    objects (anything with ``name`` and ``distance``), ``actions`` the action answered with each (None where the
    sample is not an action question). Keys: n (reasons scored), named, hit, there, distance_errors, and the
    metrics' values (NaN where undefined): precision, recall, f1, distance_mae_m, action_agreement."""
    named = hit = there = n = 0
    errors, agree = [], []
    for text, truth, act in zip(texts, truths, actions if actions is not None else [None] * len(texts)):
        if not text:
            continue
        r = parse_reason(text)
        n += 1
        t = {o.name: o.distance for o in truth}
        named += len(r.mentions)
        there += len(t)
        for name, d in r.mentions.items():
            if name in t:
                hit += 1
                if d is not None:
                    errors.append(abs(d - t[name]))
        if act is not None:
            agree.append(r.action == act)
    nan = float("nan")
    return {"n": n, "named": named, "hit": hit, "there": there, "distance_errors": errors,
            "precision": hit / named if named else nan, "recall": hit / there if there else nan,
            "f1": 2 * hit / (named + there) if named + there else nan,
            "distance_mae_m": float(np.mean(errors)) if errors else nan,
            "action_agreement": float(np.mean(agree)) if agree else nan, "n_action": len(agree)}


def _scores(y_true, y_pred) -> dict:
    pairs = _reasons(y_true, y_pred)
    return score_reasons([text for _, text in pairs], [risk_truth(s.label) for s, _ in pairs],
                         [s.answer if s.task == "action" else None for s, _ in pairs])


@register_metric("reason_hazard_precision")
def reason_hazard_precision(y_true, y_pred) -> float:
    """Of the classes the reasons name, the share really in or beside the path (micro over samples)."""
    r = _scores(y_true, y_pred)
    if r["n"] == 0:
        return _nan("no sample carries a reason")
    return r["precision"] if r["named"] else _nan("the reasons name no object")


@register_metric("reason_hazard_recall")
def reason_hazard_recall(y_true, y_pred) -> float:
    """Of the classes in or beside the path, the share the reasons name (micro over samples)."""
    r = _scores(y_true, y_pred)
    if r["n"] == 0:
        return _nan("no sample carries a reason")
    return r["recall"] if r["there"] else _nan("no object is in or beside the path on these samples")


@register_metric("reason_hazard_f1")
def reason_hazard_f1(y_true, y_pred) -> float:
    """Harmonic mean of the reasons' hazard precision and recall (0 when nothing named is there)."""
    r = _scores(y_true, y_pred)
    if r["n"] == 0:
        return _nan("no sample carries a reason")
    return r["f1"] if r["named"] + r["there"] else _nan("nothing named and nothing there")


@register_metric("reason_distance_mae_m")
def reason_distance_mae_m(y_true, y_pred) -> float:
    """Mean absolute error (m) of the distances the reasons state for the classes they rightly name."""
    r = _scores(y_true, y_pred)
    if r["n"] == 0:
        return _nan("no sample carries a reason")
    return r["distance_mae_m"] if r["distance_errors"] else _nan("no rightly named object has a stated distance")


@register_metric("reason_action_agreement")
def reason_action_agreement(y_true, y_pred) -> float:
    """On the action samples with a reason, the share whose reason states the action that was answered."""
    r = _scores(y_true, y_pred)
    if r["n_action"] == 0:
        return _nan("no action sample carries a reason")
    return r["action_agreement"]
