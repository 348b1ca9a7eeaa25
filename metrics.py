"""Detection metrics for one class at a time: PASCAL VOC AP (devkit matching; all-point or the
VOC2007 11-point method) and COCO AP over IoU 0.5:0.95 (pycocotools' COCOeval matching).

Inputs, per class:
  ground_truth: {image_id: (boxes (N, 4), difficult (N,) bool)}
  detections:   [(image_id, score, box), ...]
Boxes are VOC pixels: 1-based, inclusive xmin, ymin, xmax, ymax, so widths are xmax - xmin + 1.
"""

import numpy as np

# COCOeval's own constructions, so the thresholds are the same floats.
COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1)
COCO_RECALL_POINTS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1)


def pixel_overlaps(a, b):
    """Intersections (N, M) and areas of VOC pixel boxes a (N, 4), b (M, 4), counting both end pixels."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + 1
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + 1
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    return inter, (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1), (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)


def pixel_iou(a, b):
    """IoU of VOC pixel boxes (the devkit's +1 on widths and heights)."""
    inter, area_a, area_b = pixel_overlaps(a, b)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def voc_ap(recall, precision):
    """VOC2010+ all-point AP: area under the precision envelope (the devkit's VOCap)."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    changes = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[changes + 1] - mrec[changes]) * mpre[changes + 1]))


def voc07_ap(recall, precision):
    """VOC2007 11-point AP: mean over recall 0, 0.1, ..., 1 of the best precision at that recall or more."""
    points = [np.max(precision[recall >= t]) if np.any(recall >= t) else 0.0 for t in np.arange(0.0, 1.1, 0.1)]
    return float(np.mean(points))


def match_detections(detections, ground_truth, iou_threshold=0.5):
    """VOC devkit matching for one class -> (scores, tp, fp) sorted by score, number of non-difficult objects.

    Each detection goes to the object it overlaps most. Highest-scoring detections claim objects
    first; a second detection of a claimed object is a false positive; a detection whose best
    object is difficult counts as neither.
    """
    n_pos = int(sum(np.sum(~np.asarray(d, bool)) for _, d in ground_truth.values()))
    detections = sorted(detections, key=lambda d: -d[1])
    claimed = {image_id: np.zeros(len(boxes), bool) for image_id, (boxes, _) in ground_truth.items()}
    tp, fp = np.zeros(len(detections)), np.zeros(len(detections))
    for k, (image_id, _score, box) in enumerate(detections):
        gt_boxes, difficult = ground_truth.get(image_id, (np.zeros((0, 4)), np.zeros(0, bool)))
        if len(gt_boxes) == 0:
            fp[k] = 1
            continue
        ious = pixel_iou(np.asarray(box)[None], gt_boxes)[0]
        best = int(np.argmax(ious))
        if ious[best] < iou_threshold:
            fp[k] = 1
        elif difficult[best]:
            continue
        elif not claimed[image_id][best]:
            tp[k] = 1
            claimed[image_id][best] = True
        else:
            fp[k] = 1
    scores = np.array([d[1] for d in detections])
    return scores, tp, fp, n_pos


def average_precision(detections, ground_truth, iou_threshold=0.5, method="voc"):
    """-> dict(ap, n_gt, scores, recall, precision) for one class; method "voc" (all-point) or "voc07"."""
    scores, tp, fp, n_pos = match_detections(detections, ground_truth, iou_threshold)
    ctp, cfp = np.cumsum(tp), np.cumsum(fp)
    recall = ctp / max(n_pos, 1)
    precision = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
    area = voc07_ap if method == "voc07" else voc_ap
    ap = area(recall, precision) if n_pos else float("nan")
    return {"ap": ap, "n_gt": n_pos, "scores": scores, "recall": recall, "precision": precision}


def _coco_match_image(dets, gt_boxes, crowd, max_dets):
    """COCOeval.evaluateImg for one image and class -> (scores, matched (T, D), ignored (T, D)).

    Difficult objects play COCO's crowd regions: overlap with them is intersection over the
    detection's area, any number of detections may land on one, and those detections are ignored.
    """
    dets = sorted(dets, key=lambda d: -d[1])[:max_dets]  # Python's sort is stable, like COCOeval's mergesort
    scores = np.array([d[1] for d in dets], np.float64)
    order = np.argsort(crowd, kind="stable")  # regular objects first
    gt_boxes, crowd = np.asarray(gt_boxes, np.float64)[order], np.asarray(crowd, bool)[order]
    n_t, n_d = len(COCO_IOU_THRESHOLDS), len(dets)
    matched, ignored = np.zeros((n_t, n_d), bool), np.zeros((n_t, n_d), bool)
    if n_d == 0 or len(gt_boxes) == 0:
        return scores, matched, ignored
    det_boxes = np.array([d[2] for d in dets], np.float64)
    inter, det_area, gt_area = pixel_overlaps(det_boxes, gt_boxes)
    det_area = np.maximum(det_area, 1e-12)[:, None]
    ious = np.where(crowd[None, :], inter / det_area, inter / (det_area + gt_area[None, :] - inter))
    for t, thresh in enumerate(COCO_IOU_THRESHOLDS):
        taken = np.zeros(len(gt_boxes), bool)
        for d in range(n_d):
            best, best_iou = -1, min(thresh, 1 - 1e-10)
            for g in range(len(gt_boxes)):
                if taken[g] and not crowd[g]:
                    continue
                if best > -1 and not crowd[best] and crowd[g]:
                    break  # a regular object matched; crowd regions come last and cannot beat it
                if ious[d, g] < best_iou:
                    continue
                best, best_iou = g, ious[d, g]
            if best == -1:
                continue
            matched[t, d], ignored[t, d] = True, crowd[best]
            taken[best] = True
    return scores, matched, ignored


def coco_average_precision(detections, ground_truth, max_dets=100):
    """COCO AP for one class at each IoU threshold 0.5, 0.55, ..., 0.95 (101-point interpolation,
    at most `max_dets` detections per image) -> array (10,), NaN where the class has no objects."""
    image_dets = {}
    for det in detections:
        image_dets.setdefault(det[0], []).append(det)
    per_image = []
    for image_id in sorted(set(ground_truth) | set(image_dets), key=lambda i: (isinstance(i, str), i)):
        gt_boxes, difficult = ground_truth.get(image_id, (np.zeros((0, 4)), np.zeros(0, bool)))
        per_image.append(_coco_match_image(image_dets.get(image_id, []), gt_boxes, difficult, max_dets))
    n_pos = int(sum(np.sum(~np.asarray(d, bool)) for _, d in ground_truth.values()))
    if n_pos == 0:
        return np.full(len(COCO_IOU_THRESHOLDS), np.nan)
    n_t = len(COCO_IOU_THRESHOLDS)
    scores = np.concatenate([s for s, _, _ in per_image] + [np.zeros(0)])
    matched = np.concatenate([m for _, m, _ in per_image] + [np.zeros((n_t, 0), bool)], axis=1)
    ignored = np.concatenate([i for _, _, i in per_image] + [np.zeros((n_t, 0), bool)], axis=1)
    order = np.argsort(-scores, kind="mergesort")
    matched, ignored = matched[:, order], ignored[:, order]
    ap = np.zeros(n_t)
    for t in range(n_t if len(scores) else 0):
        tp = np.cumsum(matched[t] & ~ignored[t])
        fp = np.cumsum(~matched[t] & ~ignored[t])
        recall = tp / n_pos
        precision = tp / (tp + fp + np.spacing(1))
        precision = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
        at = np.searchsorted(recall, COCO_RECALL_POINTS, side="left")
        ap[t] = np.mean(np.where(at < len(precision), precision[np.minimum(at, len(precision) - 1)], 0.0))
    return ap
