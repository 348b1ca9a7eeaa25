"""Detection inside the graph: darknet's box decoding and per-class greedy NMS in keras.ops, as one layer with
fixed-size outputs, so the same graph runs under TensorFlow, JAX and torch and exports.

DecodeDetections(anchors, ...)(head output) -> {"boxes": (batch, max_detections, 4) corners x0, y0, x1, y1 as
fractions of the network input, "scores", "classes", "num_detections"}, best score first, rows past
num_detections zero (the padded layout of TF Object Detection and keras-hub detectors).

utils.decode_netout / nms / detect are the numpy reference the tests compare this with.
"""

import keras
from keras import ops

from custom_layers import PACKAGE

# exp(tw) beyond this overflows to boxes of no use; the numpy reference clamps the same way
MAX_LOG_SIZE = 20.0


def decode(netout, anchors):
    """Head output (batch, gh, gw, nb_box, 5 + C) -> boxes (batch, gh*gw*nb_box, 4) corners 0..1 and class
    scores (batch, gh*gw*nb_box, C), as darknet's get_region_boxes: x = (col + sigmoid(tx)) / gw,
    w = anchor_w * exp(tw) / gw, score = sigmoid(objectness) * softmax(classes)."""
    netout = ops.cast(netout, "float32")
    grid_h, grid_w = ops.shape(netout)[1:3]
    nb_box, nb_class = netout.shape[3], netout.shape[4] - 5
    gh, gw = ops.cast(grid_h, "float32"), ops.cast(grid_w, "float32")
    anchors = ops.reshape(ops.convert_to_tensor(anchors, "float32"), (1, 1, 1, nb_box, 2))
    col = ops.reshape(ops.arange(grid_w, dtype="float32"), (1, 1, -1, 1))
    row = ops.reshape(ops.arange(grid_h, dtype="float32"), (1, -1, 1, 1))
    cx = (col + ops.sigmoid(netout[..., 0])) / gw
    cy = (row + ops.sigmoid(netout[..., 1])) / gh
    w = anchors[..., 0] * ops.exp(ops.minimum(netout[..., 2], MAX_LOG_SIZE)) / gw
    h = anchors[..., 1] * ops.exp(ops.minimum(netout[..., 3], MAX_LOG_SIZE)) / gh
    corners = ops.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)
    probabilities = ops.softmax(netout[..., 5:], axis=-1) if nb_class > 1 else ops.ones_like(netout[..., 5:])
    scores = ops.sigmoid(netout[..., 4:5]) * probabilities
    return ops.reshape(corners, (-1, grid_h * grid_w * nb_box, 4)), ops.reshape(
        scores, (-1, grid_h * grid_w * nb_box, nb_class)
    )


def overlaps(boxes, nms_threshold):
    """(B, N, N) booleans: box i overlaps box j by an IoU above nms_threshold. Computed once for all classes
    (a box's shape does not depend on its class); each NMS round then only gathers rows of it."""
    a, b = boxes[:, :, None, :], boxes[:, None, :, :]
    iw = ops.maximum(ops.minimum(a[..., 2], b[..., 2]) - ops.maximum(a[..., 0], b[..., 0]), 0.0)
    ih = ops.maximum(ops.minimum(a[..., 3], b[..., 3]) - ops.maximum(a[..., 1], b[..., 1]), 0.0)
    inter = iw * ih
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    union = area[:, :, None] + area[:, None, :] - inter
    return inter / ops.maximum(union, 1e-12) > nms_threshold


def per_class_nms(boxes, scores, score_threshold, nms_threshold, max_detections):
    """Greedy NMS in every class at once: each round keeps the best remaining candidate of every class and
    drops the candidates of its class that overlap it by more than nms_threshold. -> kept scores (B, C, K)
    (-1 where a class ran out) and box indices (B, C, K), K = max_detections: a class's later picks could
    never reach the best K overall, so at most K rounds give the exact result, and fewer once every image has
    K kept boxes scoring above all its candidates left."""
    scores = ops.transpose(scores, (0, 2, 1))  # (B, C, N)
    batch, nb_class, n = ops.shape(scores)
    # row b*N + i: the boxes that box i of image b removes when it is kept (itself included, even with no area)
    removes = ops.logical_or(overlaps(boxes, nms_threshold), ops.eye(n, dtype="bool")[None])
    removes = ops.reshape(removes, (-1, n))
    image_rows = ops.reshape(ops.arange(batch, dtype="int32") * n, (-1, 1))
    slots = ops.arange(max_detections)

    candidates = ops.arange(n, dtype="int32")

    def best_of(live):
        # per class, the best candidate left (the first of equal scores, as a stable sort) and its score (-1:
        # none). Not ops.argmax: on floats its TensorFlow form needs BitwiseAnd, which TFLite has no builtin for.
        best_score = ops.max(live, axis=-1)
        best = ops.min(ops.where(live == best_score[..., None], candidates, n), axis=-1)
        return best, best_score

    def more(k, live, best, best_score, kept_scores, kept_index):
        # An image is done when no candidate is left, or when max_detections kept boxes score higher than its
        # best candidate left: later picks could not reach its best max_detections.
        best_left = ops.max(best_score, axis=1)
        settled = ops.sum(ops.cast(kept_scores > best_left[:, None, None], "int32"), axis=(1, 2)) >= max_detections
        going = ops.logical_and(best_left >= 0.0, ops.logical_not(settled))
        return ops.logical_and(k < max_detections, ops.any(going))

    def keep_best(k, live, best, best_score, kept_scores, kept_index):
        here = slots == k
        kept_scores = ops.where(here, best_score[..., None], kept_scores)
        kept_index = ops.where(here, best[..., None], kept_index)
        live = ops.where(ops.take(removes, image_rows + best, axis=0), -1.0, live)  # a class with none left stays -1
        return k + 1, live, *best_of(live), kept_scores, kept_index

    live = ops.where(scores > score_threshold, scores, -1.0)
    kept_scores = ops.full((batch, nb_class, max_detections), -1.0)
    kept_index = ops.zeros((batch, nb_class, max_detections), "int32")
    state = ops.while_loop(more, keep_best, (0, live, *best_of(live), kept_scores, kept_index))
    return state[-2], state[-1]


def select(boxes, kept_scores, kept_index, max_detections):
    """The best max_detections kept boxes over all classes (equal scores: the lower class, then the earlier
    pick, as the reference's stable sort), clipped to the image; boxes left empty by clipping are dropped
    after the cut, as the reference does. -> the four padded outputs."""
    nb_class = kept_scores.shape[1]
    flat_scores = ops.reshape(kept_scores, (-1, nb_class * max_detections))
    scores, order = ops.top_k(flat_scores, max_detections)
    index = ops.take_along_axis(ops.reshape(kept_index, (-1, nb_class * max_detections)), order, axis=1)
    chosen = ops.clip(ops.take_along_axis(boxes, ops.repeat(index[..., None], 4, axis=-1), axis=1), 0.0, 1.0)
    valid = (scores >= 0.0) & (chosen[..., 2] > chosen[..., 0]) & (chosen[..., 3] > chosen[..., 1])
    # move the valid rows to the front, in order
    rank = ops.where(valid, max_detections - ops.arange(max_detections), -1)
    _, front = ops.top_k(rank, max_detections)
    valid = ops.take_along_axis(valid, front, axis=1)
    keep = ops.cast(valid, "float32")
    return {
        "boxes": ops.take_along_axis(chosen, ops.repeat(front[..., None], 4, axis=-1), axis=1) * keep[..., None],
        "scores": ops.take_along_axis(scores, front, axis=1) * keep,
        "classes": ops.where(valid, ops.take_along_axis(order // max_detections, front, axis=1), 0),
        "num_detections": ops.sum(ops.cast(valid, "int32"), axis=1),
    }


@keras.saving.register_keras_serializable(package=PACKAGE)
class DecodeDetections(keras.layers.Layer):
    """Head output -> {"boxes", "scores", "classes", "num_detections"} (see the module docstring)."""

    def __init__(self, anchors, score_threshold, nms_threshold, max_detections, input_hw=None, **kwargs):
        """input_hw (height, width): boxes in pixels of that input instead of fractions of it (exports)."""
        super().__init__(**{"dtype": "float32", **kwargs})
        self.anchors = [float(a) for a in anchors]
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.max_detections = int(max_detections)
        self.input_hw = None if input_hw is None else [int(s) for s in input_hw]

    def call(self, netout):
        boxes, scores = decode(netout, self.anchors)
        kept_scores, kept_index = per_class_nms(
            boxes, scores, self.score_threshold, self.nms_threshold, self.max_detections
        )
        detections = select(boxes, kept_scores, kept_index, self.max_detections)
        if self.input_hw:
            h, w = self.input_hw
            detections["boxes"] = detections["boxes"] * ops.convert_to_tensor([w, h, w, h], "float32")
        return detections

    def compute_output_spec(self, netout):
        batch, k = netout.shape[0], self.max_detections
        return {
            "boxes": keras.KerasTensor((batch, k, 4), "float32"),
            "scores": keras.KerasTensor((batch, k), "float32"),
            "classes": keras.KerasTensor((batch, k), "int32"),
            "num_detections": keras.KerasTensor((batch,), "int32"),
        }

    def get_config(self):
        return {**super().get_config(), "anchors": self.anchors, "score_threshold": self.score_threshold,
                "nms_threshold": self.nms_threshold, "max_detections": self.max_detections,
                "input_hw": self.input_hw}  # fmt: skip
