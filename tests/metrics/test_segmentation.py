import numpy as np
import pytest

from cepr.metrics.calibration import expected_calibration_error, reliability_table
from cepr.metrics.segmentation import ConfusionMatrix


def test_perfect_and_half_right():
    t = np.array([[0, 0], [1, 1]], np.uint8)
    cm = ConfusionMatrix(3)
    cm.update(t, t)
    assert cm.miou() == 1.0 and cm.pixel_accuracy() == 1.0
    cm = ConfusionMatrix(3)
    cm.update(t, np.array([[0, 1], [1, 1]], np.uint8))
    iou = cm.iou()
    assert iou[0] == pytest.approx(0.5) and iou[1] == pytest.approx(2 / 3) and np.isnan(iou[2])
    assert cm.miou() == pytest.approx((0.5 + 2 / 3) / 2)
    assert cm.pixel_accuracy() == 0.75


def test_ignore_pixels_and_shape_errors():
    cm = ConfusionMatrix(3)
    cm.update(np.array([255, 0], np.uint8), np.array([1, 0], np.uint8))
    assert cm.pixels == 1 and cm.miou() == 1.0
    with pytest.raises(ValueError, match="shape"):
        cm.update(np.zeros((2, 2), np.uint8), np.zeros((2, 3), np.uint8))


def test_empty_gives_nan_with_warning():
    cm = ConfusionMatrix(3)
    with pytest.warns(RuntimeWarning):
        assert np.isnan(cm.miou())
    with pytest.warns(RuntimeWarning):
        assert np.isnan(cm.pixel_accuracy())


def test_a_class_predicted_but_absent_from_the_truth_counts_with_iou_0():
    """mmsegmentation's convention: IoU over classes with a non-empty union (the old rule, classes present in the
    truth only, gave 0.75 here and hid the false positive)."""
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 0, 0, 0]), np.array([0, 0, 0, 2]))
    assert cm.miou() == pytest.approx((0.75 + 0.0) / 2)  # class 0: 3/4; class 2: 0/1; class 1: no union, skipped


def test_ece():
    assert expected_calibration_error([0.8] * 10, [1] * 8 + [0] * 2) == pytest.approx(0.0)
    assert expected_calibration_error([1.0, 1.0], [0, 0]) == pytest.approx(1.0)
    assert expected_calibration_error([0.55], [1]) == pytest.approx(0.45)
    with pytest.warns(RuntimeWarning):
        assert np.isnan(expected_calibration_error([], []))
    rows = reliability_table([0.05, 0.95, 0.96], [0, 1, 1])
    assert [r["count"] for r in rows] == [1, 2]
