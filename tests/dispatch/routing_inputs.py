"""Constructed edge results, shaped as cepr's edge module returns them, for the routing-policy tests."""

from __future__ import annotations


def features(**over) -> dict:
    f = {"margin": 0.6, "entropy": 0.4, "risk": 0.1, "uncertainty": 0.05, "n_objects": 8, "hazards": {},
         "hazard_m": None, "hazard_near_path": False, "people_near": 0, "person_m": None, "free_m": 20.0,
         "mask_classes": 5, "edge_density": 0.05, "fragments": 6}
    f.update(over)
    return f


def edge(confidence=0.9, task="path_hazard", key="f0001", latency_ms=30.0, answer="no", **feature_over) -> dict:
    return {"source": "edge", "key": key, "task": task, "answer": answer, "confidence": confidence,
            "latency_ms": latency_ms, "distribution": ({"no": confidence, "yes": 1 - confidence} if isinstance(confidence, float) else None),
            "features": features(**feature_over)}
