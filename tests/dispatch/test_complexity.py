"""Complexity: Ianvs's scene-complexity score from the edge features, and routing that depends on it."""

import pytest
from routing_inputs import edge

from cepr.dispatch import Complexity
from cepr.errors import CeprError


def score(classes, density, fragments):
    return (0.4 * min(classes / 15, 1) + 0.4 * min(density / 0.5, 1) + 0.2 * min(fragments / 20, 1))


@pytest.mark.parametrize("classes,density,fragments", [(0, 0.0, 0), (5, 0.05, 6), (15, 0.5, 20), (30, 0.9, 90),
                                                       (7, 0.2, 11)])
def test_score_is_ianvs_formula(classes, density, fragments):
    x = edge(mask_classes=classes, edge_density=density, fragments=fragments)
    assert Complexity().score(x) == pytest.approx(score(classes, density, fragments))


def test_routes_above_the_threshold_only():
    p = Complexity(threshold=0.5)
    simple = edge(mask_classes=3, edge_density=0.02, fragments=3)
    busy = edge(mask_classes=14, edge_density=0.3, fragments=25)
    assert p(simple) is False and p(busy) is True
    # the decision moves with each term, the confidence plays no part
    assert p(edge(confidence=0.01, mask_classes=3, edge_density=0.02, fragments=3)) is False
    assert Complexity(threshold=0.0)(simple) is True


def test_weights_and_scales():
    p = Complexity(weights=[0, 1, 0], scales=[1, 0.1, 1], threshold=0.9)
    assert p.score(edge(edge_density=0.05)) == pytest.approx(0.5)
    assert p(edge(edge_density=0.2)) is True
    assert Complexity(weights="0.2, 0.2, 0.6").weights == (0.2, 0.2, 0.6)
    with pytest.raises(CeprError, match="list of 3 numbers"):
        Complexity(weights=[1, 2])
    with pytest.raises(CeprError, match=r"scales\[1\]"):
        Complexity(scales=[1, 0, 1])


def test_bad_input_names_the_field():
    p = Complexity()
    with pytest.raises(CeprError, match=r"features\.edge_density, which is missing"):
        e = edge()
        del e["features"]["edge_density"]
        p(e)
    with pytest.raises(CeprError, match=r"features\.fragments must be a finite number"):
        p(edge(fragments=float("nan")))
    with pytest.raises(CeprError, match=r"features\.mask_classes must be >= 0"):
        p(edge(mask_classes=-1))
