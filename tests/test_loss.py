"""The loss against hand-computed values and against darknet's region-layer deltas."""

import math

import numpy as np
import pytest
import tensorflow as tf


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def grid_target(grid_hw, nb_box, nb_class, assignments):
    """assignments: list of (j, i, anchor, (x, y, w, h) grid units, class)."""
    y = np.zeros((1, *grid_hw, nb_box, 5 + nb_class), np.float32)
    boxes = np.zeros((1, 1, 1, 1, 4, 4), np.float32)
    for k, (j, i, a, box, cls) in enumerate(assignments):
        y[0, j, i, a, :4] = box
        y[0, j, i, a, 4] = 1
        y[0, j, i, a, 5 + cls] = 1
        boxes[0, 0, 0, 0, k] = box
    return y, boxes


def run(loss, y_true, y_pred, true_boxes, seen=1e9):
    total, terms = loss(y_true, y_pred, true_boxes, np.array([seen], np.float32))
    return float(total), {k: float(v) for k, v in terms.items()}


def test_perfect_box_at_anchor_prior(make_loss):
    # 2x2 grid, one 1x1 anchor, 2 classes; all-zero output = boxes at the cell centres with the anchor's size.
    loss = make_loss([1.0, 1.0])
    y_true, true_boxes = grid_target((2, 2), 1, 2, [(0, 0, 0, (0.5, 0.5, 1.0, 1.0), 0)])
    total, terms = run(loss, y_true, np.zeros_like(y_true), true_boxes)
    assert terms["coord"] == pytest.approx(0.0, abs=1e-7)
    assert terms["obj"] == pytest.approx(0.5 * 5 * (1 - 0.5) ** 2)  # rescore: target IoU = 1
    assert terms["noobj"] == pytest.approx(3 * 0.5 * 0.5**2)  # the three other cells, IoU 0 with the box
    assert terms["class"] == pytest.approx(math.log(2))
    assert total == pytest.approx(0.625 + 0.375 + math.log(2), rel=1e-6)


def test_offset_and_size_errors_with_rescore_and_gradient_signs(make_loss):
    loss = make_loss([1.0, 1.0])
    y_true, true_boxes = grid_target((2, 2), 1, 2, [(0, 0, 0, (0.25, 0.5, 0.5, 1.0), 1)])
    y_pred = np.zeros_like(y_true)
    y_pred[0, 0, 0, 0, 0] = math.log(4)  # sigmoid = 0.8
    _, terms = run(loss, y_true, y_pred, true_boxes)
    scale = 2 - 0.5 * 1.0 / 4  # coord_scale * (2 - w*h), w, h relative to the image
    assert terms["coord"] == pytest.approx(0.5 * scale * ((0.25 - 0.8) ** 2 + math.log(0.5) ** 2), rel=1e-5)
    # predicted box [0.3, 1.3] x [0, 1] against [0, 0.5] x [0, 1]: IoU 0.2 / 1.3
    assert terms["obj"] == pytest.approx(0.5 * 5 * (0.2 / 1.3 - 0.5) ** 2, rel=1e-5)

    pred = tf.Variable(y_pred)
    with tf.GradientTape() as tape:
        total, _ = loss(y_true, pred, true_boxes, np.array([1e9], np.float32))
    grad = tape.gradient(total, pred).numpy()[0, 0, 0, 0]
    assert grad[0] > 0  # sigmoid(tx) = 0.8 above the 0.25 target: push tx down
    assert grad[1] == pytest.approx(0, abs=1e-7)  # ty already right
    assert grad[2] > 0  # tw = 0 above log(0.5)
    assert grad[4] > 0  # objectness 0.5 above the IoU 0.15 it should predict
    assert grad[5] > 0 and grad[6] < 0  # class 1 is the true one


@pytest.mark.parametrize("thresh, expected_noobj_preds", [(0.6, 6), (0.7, 7)])
def test_no_object_penalty_skips_predictions_overlapping_a_box(thresh, expected_noobj_preds, make_loss):
    # Anchor 1 (1.2 x 1.2) at cell (0, 0) overlaps the 1x1 box with IoU 1/1.44 = 0.69.
    loss = make_loss([1.0, 1.0, 1.2, 1.2], ignore_threshold=thresh)
    y_true, true_boxes = grid_target((2, 2), 2, 1, [(0, 0, 0, (0.5, 0.5, 1.0, 1.0), 0)])
    _, terms = run(loss, y_true, np.zeros_like(y_true), true_boxes)
    assert terms["noobj"] == pytest.approx(expected_noobj_preds * 0.125)


def test_warmup_prior_only_while_seen_is_small_and_only_unassigned(make_loss):
    loss = make_loss([1.0, 1.0], warmup_images=12800)
    y_true, true_boxes = grid_target((2, 2), 1, 1, [(0, 0, 0, (0.5, 0.5, 1.0, 1.0), 0)])
    y_pred = np.zeros_like(y_true)
    y_pred[..., 0] = 1.0  # every prediction's x offset away from the cell centre
    y_pred[..., 2] = 0.5  # and wider than its anchor
    _, early = run(loss, y_true, y_pred, true_boxes, seen=12799)
    _, late = run(loss, y_true, y_pred, true_boxes, seen=12800)
    per_prediction = 0.5 * 0.01 * ((0.5 - sigmoid(1.0)) ** 2 + 0.5**2)
    assert early["coord"] - late["coord"] == pytest.approx(3 * per_prediction, rel=1e-5)


def test_batch_is_averaged(make_loss):
    loss = make_loss([1.0, 1.0])
    y_true, true_boxes = grid_target((2, 2), 1, 2, [(0, 0, 0, (0.5, 0.5, 1.0, 1.0), 0)])
    single, _ = run(loss, y_true, np.zeros_like(y_true), true_boxes)
    pair, _ = loss(
        np.concatenate([y_true, y_true]),
        np.zeros((2, *y_true.shape[1:]), np.float32),
        np.concatenate([true_boxes, true_boxes]),
        np.array([1e9, 1e9], np.float32),
    )
    assert float(pair) == pytest.approx(single)


# --- darknet reference: forward_region_layer's deltas, transliterated from region_layer.c ---


def box_iou_xywh(a, b):
    def overlap(x1, w1, x2, w2):
        return min(x1 + w1 / 2, x2 + w2 / 2) - max(x1 - w1 / 2, x2 - w2 / 2)

    w, h = overlap(a[0], a[2], b[0], b[2]), overlap(a[1], a[3], b[1], b[3])
    inter = 0 if w < 0 or h < 0 else w * h
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def darknet_delta(out, truths, biases, seen, thresh=0.6, scales=(5, 1, 1, 1)):
    """out: raw (h, w, n, 5+C); truths: [(x, y, w, h relative to image, class)]. Returns delta (same shape),
    darknet's convention: delta = -dLoss/d(activated output)."""
    object_scale, noobject_scale, class_scale, coord_scale = scales
    lh, lw, n_anchors, _ = out.shape
    act = out.copy()
    act[..., 0:2] = sigmoid(out[..., 0:2])
    act[..., 4] = sigmoid(out[..., 4])
    e = np.exp(out[..., 5:] - out[..., 5:].max(-1, keepdims=True))
    act[..., 5:] = e / e.sum(-1, keepdims=True)
    delta = np.zeros_like(out)

    def region_box(j, i, n):
        return ((i + act[j, i, n, 0]) / lw, (j + act[j, i, n, 1]) / lh,
                np.exp(act[j, i, n, 2]) * biases[2 * n] / lw, np.exp(act[j, i, n, 3]) * biases[2 * n + 1] / lh)  # fmt: skip

    def delta_region_box(truth, j, i, n, scale):
        pred = region_box(j, i, n)
        iou = box_iou_xywh(pred, truth)
        tx, ty = truth[0] * lw - i, truth[1] * lh - j
        tw, th = math.log(truth[2] * lw / biases[2 * n]), math.log(truth[3] * lh / biases[2 * n + 1])
        delta[j, i, n, 0:4] = scale * (np.array([tx, ty, tw, th]) - act[j, i, n, 0:4])
        return iou

    for j in range(lh):
        for i in range(lw):
            for n in range(n_anchors):
                pred = region_box(j, i, n)
                best_iou = max(box_iou_xywh(pred, t[:4]) for t in truths)
                delta[j, i, n, 4] = noobject_scale * (0 - act[j, i, n, 4])
                if best_iou > thresh:
                    delta[j, i, n, 4] = 0
                if seen < 12800:
                    prior = ((i + 0.5) / lw, (j + 0.5) / lh, biases[2 * n] / lw, biases[2 * n + 1] / lh)
                    delta_region_box(prior, j, i, n, 0.01)
    for t in truths:
        truth, cls = t[:4], t[4]
        i, j = int(truth[0] * lw), int(truth[1] * lh)
        shift = (0, 0, truth[2], truth[3])
        ious = [box_iou_xywh((0, 0, biases[2 * n] / lw, biases[2 * n + 1] / lh), shift) for n in range(n_anchors)]
        n = int(np.argmax(ious))
        iou = delta_region_box(truth, j, i, n, coord_scale * (2 - truth[2] * truth[3]))
        delta[j, i, n, 4] = object_scale * (iou - act[j, i, n, 4])  # rescore
        onehot = np.eye(out.shape[-1] - 5)[cls]
        delta[j, i, n, 5:] = class_scale * (onehot - act[j, i, n, 5:])
    return delta, act


@pytest.mark.parametrize("seen", [0, 100000])
def test_gradient_equals_darknet_region_layer_delta(seen, make_loss):
    rng = np.random.default_rng(3)
    grid, anchors, nb_class = (4, 5), [1.0, 1.5, 2.5, 2.0, 0.6, 0.7], 3
    out = rng.normal(0, 0.8, (*grid, 3, 5 + nb_class)).astype(np.float32)
    truths = [(0.31, 0.42, 0.35, 0.4, 2), (0.74, 0.7, 0.12, 0.15, 0), (0.1, 0.85, 0.5, 0.2, 1)]

    from preprocessing import encode_targets

    boxes = np.array([[x - w / 2, y - h / 2, x + w / 2, y + h / 2] for x, y, w, h, _ in truths], np.float32)
    y_grid, tb = encode_targets(boxes, [t[4] for t in truths], grid, anchors, nb_class, 4)

    pred = tf.Variable(out[None])
    with tf.GradientTape() as tape:
        total, _ = make_loss(anchors)(y_grid[None], pred, tb[None, None, None, None], np.array([seen], np.float32))
    grad = tape.gradient(total, pred).numpy()[0]

    delta, act = darknet_delta(out, truths, anchors, seen)
    expected = -delta
    # Through the logistic activations darknet's GPU backward applies: d sigma = sigma (1 - sigma).
    expected[..., 0:2] *= act[..., 0:2] * (1 - act[..., 0:2])
    expected[..., 4] *= act[..., 4] * (1 - act[..., 4])
    np.testing.assert_allclose(grad, expected, atol=2e-5)
