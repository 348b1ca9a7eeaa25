"""Decoding, NMS and VOC average precision against hand-worked cases."""

import numpy as np
import pytest

from evaluate import evaluate_detections
from utils import average_precision, box_iou, decode_netout, detect, nms, voc_ap


def test_box_iou_by_hand():
    iou = box_iou([[0, 0, 2, 2]], [[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6]])
    np.testing.assert_allclose(iou, [[1 / 7, 1.0, 0.0]])


def test_decode_by_hand():
    netout = np.zeros((1, 2, 2, 1, 5 + 2), np.float32)
    netout[..., 4] = -20  # nothing there ...
    netout[0, 0, 1, 0, 4] = 20  # ... but in row 0, column 1
    netout[0, 0, 1, 0, 5] = np.log(3)  # class probabilities 0.75 / 0.25
    netout[0, 0, 1, 0, 2] = np.log(0.5)  # half the anchor's width
    (boxes, scores, classes), = decode_netout(netout, anchors=[2.0, 2.0], obj_thresh=0.3)  # fmt: skip
    np.testing.assert_allclose(boxes, [[0.5, -0.25, 1.0, 0.75]], atol=1e-6)  # centre (0.75, 0.25), 0.5 x 1
    np.testing.assert_allclose(scores, [0.75], atol=1e-6)
    assert classes.tolist() == [0]
    # both classes are candidates at a lower threshold
    (_, scores, classes), = decode_netout(netout, anchors=[2.0, 2.0], obj_thresh=0.2)  # fmt: skip
    assert sorted(classes.tolist()) == [0, 1]


def test_detect_maps_to_original_pixels_any_aspect():
    netout = np.full((1, 2, 2, 1, 6), -20, np.float32)
    netout[0, 1, 0, 0, 4] = 20
    netout[0, 1, 0, 0, 5] = 0
    netout[0, 1, 0, 0, :4] = 0  # cell centre, anchor size 1x1 grid cells
    (boxes, scores, _), = detect(netout, [1.0, 1.0], [(300, 640)], obj_thresh=0.5)  # fmt: skip
    np.testing.assert_allclose(boxes, [[0, 150, 320, 300]], atol=1e-3)


def test_nms_is_per_class():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    classes = np.array([0, 0, 1, 0])
    assert nms(boxes, scores, classes, 0.45).tolist() == [0, 2, 3]
    assert nms(boxes, scores, classes, 0.9).tolist() == [0, 1, 2, 3]


def test_voc_ap_all_point_by_hand():
    # precision envelope: 1.0 up to recall 0.5, then 0.5 up to recall 1.0
    assert voc_ap(np.array([0.5, 0.5, 0.5, 1.0]), np.array([1.0, 0.5, 1 / 3, 0.5])) == pytest.approx(0.75)
    assert voc_ap(np.array([0.25, 0.5]), np.array([1.0, 1.0])) == pytest.approx(0.5)


def test_average_precision_difficult_and_duplicates_like_the_devkit():
    ground_truth = {
        0: (np.array([[10, 10, 50, 50], [100, 100, 140, 140]], float), np.array([False, True])),
        1: (np.array([[10, 10, 50, 50]], float), np.array([False])),
    }
    detections = [
        (0, 0.9, [10, 10, 50, 50]),  # TP
        (0, 0.8, [12, 12, 50, 50]),  # duplicate of the same object: FP
        (0, 0.7, [100, 100, 140, 140]),  # on the difficult object: ignored
        (1, 0.6, [60, 60, 90, 90]),  # misses: FP
        (1, 0.5, [11, 11, 50, 50]),  # TP
    ]
    result = average_precision(detections, ground_truth)
    assert result["n_gt"] == 2
    assert result["ap"] == pytest.approx(0.75)  # TP FP FP TP: recall .5 at precision 1, recall 1 at .5


def test_evaluate_detections_per_class_and_mean():
    instances = [
        {"object": [{"name": "a", "difficult": False, "xmin": 11, "ymin": 11, "xmax": 50, "ymax": 50},
                    {"name": "b", "difficult": False, "xmin": 61, "ymin": 61, "xmax": 90, "ymax": 90}]},
    ]  # fmt: skip
    # perfect "a", "b" found only as a wrong-class box
    dets = [(np.array([[10, 10, 50, 50], [60, 60, 90, 90]], np.float32), np.array([0.9, 0.8]), np.array([0, 0]))]
    results = evaluate_detections(instances, dets, ["a", "b", "c"], score_thresh=0.5)
    assert results["classes"]["a"]["ap"] == pytest.approx(1.0)
    assert results["classes"]["b"]["ap"] == pytest.approx(0.0)
    assert results["classes"]["c"]["n_gt"] == 0
    assert results["map"] == pytest.approx(0.5)  # classes without ground truth are left out
    assert results["classes"]["a"]["precision_at_thresh"] == pytest.approx(0.5)
