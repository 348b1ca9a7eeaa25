"""Boxes and drawing (metrics live in metrics.py; decoding and NMS, in the graph, in decoding.py).

Boxes are numpy arrays (N, 4) of xmin, ymin, xmax, ymax. Inside the project they are continuous
corners (0-based, the end exclusive: a box covering pixels 0..9 is [0, 10]); at the edges (annotation
XML, detections files, records) they follow the VOC pixel convention (1-based, inclusive: [1, 10]).
voc_to_corners / corners_to_voc are the one place that converts.
"""

import colorsys

import cv2
import numpy as np

VOC_SHIFT = np.array([1, 1, 0, 0], np.float64)


def voc_to_corners(boxes, dtype=np.float64):
    """VOC pixel boxes (1-based, inclusive: the numbers an annotation XML holds) -> continuous corners."""
    return (np.asarray(boxes, np.float64).reshape(-1, 4) - VOC_SHIFT).astype(dtype)


def corners_to_voc(boxes, dtype=np.float64):
    """Continuous corners -> VOC pixel boxes (1-based, inclusive), the inverse of voc_to_corners."""
    return (np.asarray(boxes, np.float64).reshape(-1, 4) + VOC_SHIFT).astype(dtype)


def shape_iou(wh, shapes):
    """IoU of (N, 2) box shapes against (K, 2) shapes, all centred at the origin -> (N, K): darknet's
    bias_match and the k-means distance of anchors.py compare boxes by shape only."""
    inter = np.minimum(wh[:, None, 0], shapes[None, :, 0]) * np.minimum(wh[:, None, 1], shapes[None, :, 1])
    union = (wh[:, 0] * wh[:, 1])[:, None] + (shapes[:, 0] * shapes[:, 1])[None, :] - inter
    return inter / union


def class_colors(n):
    """Evenly spaced hues, bright enough to read labels on."""
    return [tuple(int(255 * c) for c in colorsys.hsv_to_rgb(i / max(n, 1), 0.85, 0.95)) for i in range(n)]


def draw_boxes(image, boxes, scores, class_ids, labels):
    """Draws boxes with "label score" captions on a copy of an RGB uint8 image (scores None: labels only)."""
    image = image.copy()
    colors = class_colors(len(labels))
    thickness = max(1, round(min(image.shape[:2]) / 250))
    for box, score, cls in zip(boxes, [None] * len(boxes) if scores is None else scores, class_ids):
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        color = colors[int(cls)]
        cv2.rectangle(image, (x0, y0), (x1, y1), color, thickness)
        caption = labels[int(cls)] if score is None else f"{labels[int(cls)]} {score:.2f}"
        scale = 0.4 * thickness
        (tw, th), base = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        y_text = max(y0, th + base)
        cv2.rectangle(image, (x0, y_text - th - base), (x0 + tw, y_text), color, -1)
        # black on light colours, white on dark ones (Rec. 601 luma)
        ink = (0, 0, 0) if 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2] > 128 else (255, 255, 255)
        cv2.putText(image, caption, (x0, y_text - base), cv2.FONT_HERSHEY_SIMPLEX, scale, ink, 1, cv2.LINE_AA)
    return image
