"""The numpy decoding and NMS the project used before decoding.py put them in the graph: the reference the
graph is checked against (tests/test_decoding.py), written plainly, one image and one class at a time."""

import numpy as np


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def softmax(x, axis=-1):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def box_iou(a, b):
    """Pairwise IoU of corner boxes a (N, 4) and b (M, 4) -> (N, M)."""
    a, b = np.asarray(a, np.float64)[:, None, :], np.asarray(b, np.float64)[None, :, :]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    union = (
        (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1]) + (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1]) - inter
    )
    return inter / np.maximum(union, 1e-12)


def decode_netout(netout, anchors, score_threshold):
    """Raw head output (batch, gh, gw, nb_box, 5+C) -> per image (boxes 0..1, scores, class ids).

    As darknet's get_region_boxes: x = (col + sigmoid(tx)) / gw, w = anchor_w * exp(tw) / gw,
    class score = sigmoid(objectness) * softmax(classes); every (box, class) pair above
    score_threshold is a candidate.
    """
    netout = np.asarray(netout, np.float32)
    batch, gh, gw, nb_box, _ = netout.shape
    anchors = np.asarray(anchors, np.float32).reshape(1, 1, 1, nb_box, 2)
    col = np.arange(gw, dtype=np.float32).reshape(1, 1, gw, 1)
    row = np.arange(gh, dtype=np.float32).reshape(1, gh, 1, 1)
    cx = (col + sigmoid(netout[..., 0])) / gw
    cy = (row + sigmoid(netout[..., 1])) / gh
    w = anchors[..., 0] * np.exp(np.minimum(netout[..., 2], 20)) / gw
    h = anchors[..., 1] * np.exp(np.minimum(netout[..., 3], 20)) / gh
    corners = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)
    scores = sigmoid(netout[..., 4:5]) * softmax(netout[..., 5:])
    results = []
    for b in range(batch):
        cell, cls = np.nonzero(scores[b].reshape(-1, scores.shape[-1]) > score_threshold)
        results.append((corners[b].reshape(-1, 4)[cell], scores[b].reshape(-1, scores.shape[-1])[cell, cls], cls))
    return results


def nms(boxes, scores, class_ids, nms_threshold, max_detections):
    """Greedy per-class non-maximum suppression -> indices kept, best score first."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    for cls in np.unique(class_ids):
        idx = order[class_ids[order] == cls]
        while idx.size:
            keep.append(idx[0])
            if idx.size == 1:
                break
            overlap = box_iou(boxes[idx[:1]], boxes[idx[1:]])[0]
            idx = idx[1:][overlap <= nms_threshold]
    keep = np.array(sorted(keep, key=lambda i: -scores[i]), dtype=np.int64)
    return keep[:max_detections]


def detect(netout, anchors, image_sizes, score_threshold, nms_threshold, max_detections):
    """Decode + NMS + map to each original image's pixels (any aspect ratio; network input was a plain resize).

    image_sizes: [(height, width), ...]. Returns per image (boxes in pixels, scores, class ids).
    """
    results = []
    for (boxes, scores, cls), (h, w) in zip(decode_netout(netout, anchors, score_threshold), image_sizes):
        keep = nms(boxes, scores, cls, nms_threshold, max_detections)
        boxes = np.clip(boxes[keep] * np.array([w, h, w, h], np.float32), 0, [w, h, w, h])
        # zero-size boxes (exp(tw) underflow) are dropped
        inside = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        results.append((boxes[inside], scores[keep][inside], cls[keep][inside]))
    return results
