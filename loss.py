"""YOLOv2 loss, following darknet's region layer (src/region_layer.c, forward_region_layer).

Darknet writes a `delta` (the negative gradient) for each output; the loss
here is the function whose gradient is that delta, so training matches darknet:

* coordinates of the prediction a ground-truth box is assigned to (its cell,
  the anchor with the best shape IoU: bias_match=1): delta_region_box,
  scale * (target - output) on sigmoid(tx), sigmoid(ty), raw tw, raw th
  with scale = coord_scale * (2 - w*h) (w, h relative to the image)
  -> 0.5 * scale * squared error;
* objectness of that prediction: object_scale * (iou - sigmoid(to)) with
  rescore=1 (target 1 without rescore), iou between the predicted and the
  true box, not differentiated -> 0.5 * object_scale * squared error;
* class of that prediction: delta_region_class with softmax, class_scale *
  (onehot - p) on the logits -> class_scale * cross-entropy;
* objectness of every other prediction: noobject_scale * (0 - sigmoid(to)),
  set to zero when the predicted box overlaps some ground-truth box of the
  image by more than `thresh` -> 0.5 * noobject_scale * sigmoid(to)^2;
* while `seen` < warmup_images (darknet: 12800), the coordinates of every unassigned prediction
  are pulled toward its anchor at the cell centre (tx, ty = 0.5, tw, th = 0)
  with scale .01.

Everything is summed over the grid and averaged over the batch (darknet sums
the batch and divides the learning rate by it).
"""

from keras import ops

# region_layer.c's fixed scale .01 for the warm-up pull toward the anchor priors
PRIOR_SCALE = 0.01


def box_iou_xywh(a, b):
    """IoU of boxes given as (..., 4) centre x, y, width, height; broadcasts."""
    a_min, a_max = a[..., :2] - a[..., 2:4] / 2, a[..., :2] + a[..., 2:4] / 2
    b_min, b_max = b[..., :2] - b[..., 2:4] / 2, b[..., :2] + b[..., 2:4] / 2
    overlap = ops.maximum(ops.minimum(a_max, b_max) - ops.maximum(a_min, b_min), 0.0)
    inter = overlap[..., 0] * overlap[..., 1]
    union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter
    return inter / ops.maximum(union, 1e-9)


class YoloLoss:
    """Callable (y_true, y_pred, true_boxes, seen) -> (total, dict of per-term losses).

    y_pred: (batch, grid_h, grid_w, nb_box, 4+1+nb_class) raw head output.
    y_true: same shape; for assigned predictions [x, y, w, h] of the true box in
        grid units (x, y absolute, not offsets), 1, one-hot class; zeros elsewhere.
    true_boxes: (batch, 1, 1, 1, max_box_per_image, 4) every true box of the
        image (x, y, w, h in grid units), zero-padded, for the no-object test.
    seen: (batch,) number of images the network had seen before this batch.
    """

    def __init__(
        self, anchors, object_scale, no_object_scale, coord_scale, class_scale, ignore_threshold, warmup_images
    ):
        """The settings come from config.loss_args; the defaults there are yolov2-voc.cfg's."""
        self.anchors = [float(a) for a in anchors]
        self.object_scale = object_scale
        self.no_object_scale = no_object_scale
        self.coord_scale = coord_scale
        self.class_scale = class_scale
        self.ignore_threshold = ignore_threshold
        self.warmup_images = warmup_images

    def __call__(self, y_true, y_pred, true_boxes, seen):
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.cast(y_pred, "float32")
        nb_box = y_pred.shape[3]
        grid_h, grid_w = ops.shape(y_pred)[1:3]  # dynamic under multi-scale training, ints otherwise
        anchors = ops.reshape(ops.convert_to_tensor(self.anchors, "float32"), (1, 1, 1, nb_box, 2))
        cell_x = ops.reshape(ops.arange(grid_w, dtype="float32"), (1, 1, grid_w, 1))
        cell_y = ops.reshape(ops.arange(grid_h, dtype="float32"), (1, grid_h, 1, 1))
        cell = ops.stack([ops.broadcast_to(cell_x, (1, grid_h, grid_w, 1)),
                          ops.broadcast_to(cell_y, (1, grid_h, grid_w, 1))], axis=-1)  # fmt: skip

        pred_offset = ops.sigmoid(y_pred[..., 0:2])
        pred_twh = y_pred[..., 2:4]
        pred_conf = ops.sigmoid(y_pred[..., 4])
        pred_box = ops.concatenate([pred_offset + cell, ops.exp(pred_twh) * anchors], axis=-1)

        obj_mask = y_true[..., 4]
        true_box = y_true[..., 0:4]
        true_offset = true_box[..., 0:2] - cell
        true_twh = ops.log(ops.maximum(true_box[..., 2:4], 1e-9) / anchors) * obj_mask[..., None]

        # delta_region_box for assigned predictions, scale coord_scale * (2 - w*h).
        area = true_box[..., 2] * true_box[..., 3] / ops.cast(grid_w * grid_h, "float32")
        coord_weight = self.coord_scale * (2.0 - area) * obj_mask
        coord_err = ops.sum(ops.square(true_offset - pred_offset), -1) + ops.sum(ops.square(true_twh - pred_twh), -1)
        coord = 0.5 * coord_weight * coord_err

        # Objectness of assigned predictions: toward the IoU they reach (rescore).
        iou = ops.stop_gradient(box_iou_xywh(pred_box, true_box))
        obj = 0.5 * self.object_scale * obj_mask * ops.square(iou - pred_conf)

        # Every other prediction: no-object unless it already overlaps a true box by > thresh.
        all_ious = box_iou_xywh(ops.expand_dims(pred_box, 4), ops.cast(true_boxes, "float32"))
        best_iou = ops.stop_gradient(ops.max(all_ious, axis=-1))
        noobj_mask = (1.0 - obj_mask) * ops.cast(best_iou <= self.ignore_threshold, "float32")
        noobj = 0.5 * self.no_object_scale * noobj_mask * ops.square(pred_conf)

        # delta_region_class with softmax: cross-entropy on the class logits.
        log_probs = ops.log_softmax(y_pred[..., 5:], axis=-1)
        cls = -self.class_scale * obj_mask * ops.sum(y_true[..., 5:] * log_probs, axis=-1)

        # Warm-up: pull unassigned predictions toward their anchor at the cell centre.
        warm = ops.cast(ops.cast(seen, "float32") < self.warmup_images, "float32")
        warm = ops.reshape(warm, (-1, 1, 1, 1)) * (1.0 - obj_mask)
        prior_err = ops.sum(ops.square(0.5 - pred_offset), -1) + ops.sum(ops.square(pred_twh), -1)
        prior = 0.5 * PRIOR_SCALE * warm * prior_err

        terms = {
            "coord": coord + prior,
            "obj": obj,
            "noobj": noobj,
            "class": cls,
        }
        terms = {name: ops.mean(ops.sum(value, axis=(1, 2, 3))) for name, value in terms.items()}
        total = terms["coord"] + terms["obj"] + terms["noobj"] + terms["class"]
        return total, terms
