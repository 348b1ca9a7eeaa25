"""Decoding and NMS against hand-worked cases."""

import numpy as np
from numpy_detect import box_iou, decode_netout, detect, nms

from utils import corners_to_voc, shape_iou, voc_to_corners


def test_box_iou_by_hand():
    iou = box_iou([[0, 0, 2, 2]], [[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6]])
    np.testing.assert_allclose(iou, [[1 / 7, 1.0, 0.0]])


def test_decode_by_hand():
    netout = np.zeros((1, 2, 2, 1, 5 + 2), np.float32)
    netout[..., 4] = -20  # nothing there ...
    netout[0, 0, 1, 0, 4] = 20  # ... but in row 0, column 1
    netout[0, 0, 1, 0, 5] = np.log(3)  # class probabilities 0.75 / 0.25
    netout[0, 0, 1, 0, 2] = np.log(0.5)  # half the anchor's width
    (boxes, scores, classes), = decode_netout(netout, anchors=[2.0, 2.0], score_threshold=0.3)  # fmt: skip
    np.testing.assert_allclose(boxes, [[0.5, -0.25, 1.0, 0.75]], atol=1e-6)  # centre (0.75, 0.25), 0.5 x 1
    np.testing.assert_allclose(scores, [0.75], atol=1e-6)
    assert classes.tolist() == [0]
    # both classes are candidates at a lower threshold
    (_, scores, classes), = decode_netout(netout, anchors=[2.0, 2.0], score_threshold=0.2)  # fmt: skip
    assert sorted(classes.tolist()) == [0, 1]


def test_detect_maps_to_original_pixels_any_aspect():
    netout = np.full((1, 2, 2, 1, 6), -20, np.float32)
    netout[0, 1, 0, 0, 4] = 20
    netout[0, 1, 0, 0, 5] = 0
    netout[0, 1, 0, 0, :4] = 0  # cell centre, anchor size 1x1 grid cells
    (boxes, scores, _), = detect(netout, [1.0, 1.0], [(300, 640)], 0.5, 0.45, 300)  # fmt: skip
    np.testing.assert_allclose(boxes, [[0, 150, 320, 300]], atol=1e-3)


def test_nms_is_per_class():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    classes = np.array([0, 0, 1, 0])
    assert nms(boxes, scores, classes, 0.45, 300).tolist() == [0, 2, 3]
    assert nms(boxes, scores, classes, 0.9, 300).tolist() == [0, 1, 2, 3]


def test_detect_drops_zero_size_boxes():
    netout = np.full((1, 1, 1, 2, 6), -20, np.float32)
    netout[0, 0, 0, :, 4] = 20
    netout[0, 0, 0, :, 5] = 0
    netout[0, 0, 0, :, 0:2] = 0  # both centred in the cell
    netout[0, 0, 0, 0, 2:4] = -120  # exp(-120) underflows: a box of no size
    netout[0, 0, 0, 1, 2:4] = 0
    ((boxes, scores, _),) = detect(netout, [1.0, 1.0, 0.5, 0.5], [(100, 100)], 0.5, 0.45, 300)
    np.testing.assert_allclose(boxes, [[25, 25, 75, 75]], atol=1e-3)


def test_voc_pixel_convention_by_hand():
    # a box covering pixels 1..10 (VOC, inclusive) spans [0, 10) as continuous corners: 10 pixels wide
    np.testing.assert_array_equal(voc_to_corners([[1, 1, 10, 20]]), [[0, 0, 10, 20]])
    np.testing.assert_array_equal(corners_to_voc([[0, 0, 10, 20]]), [[1, 1, 10, 20]])
    boxes = np.random.default_rng(0).uniform(0, 500, (7, 4))
    np.testing.assert_allclose(corners_to_voc(voc_to_corners(boxes)), boxes)
    assert voc_to_corners([], np.float32).shape == (0, 4) and voc_to_corners([], np.float32).dtype == np.float32


def test_shape_iou_by_hand():
    # a 2x2 box against a 1x4 shape, both centred: overlap 1x2 = 2, union 4 + 4 - 2 = 6
    np.testing.assert_allclose(shape_iou(np.array([[2.0, 2.0]]), np.array([[1.0, 4.0], [2.0, 2.0]])), [[1 / 3, 1.0]])
