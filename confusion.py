"""The detection confusion matrix: which class each object was detected as, at one score threshold and IoU 0.5,
with a background row (objects nobody detected) and a background column (detections of nothing).

Objects and the detections scoring at least the threshold are paired by IoU whatever their classes, as in
ultralytics' ConfusionMatrix, so a box on the right object with the wrong class shows as a confusion, not as a
miss plus a false alarm. Pairing is greedy from the largest IoU above the IoU threshold, each detection and each
object at most once (ultralytics' two de-duplication passes can leave a detection unpaired whose best object went
to another, although its second-best was free). A pair counts at [detected class, true class]; an object left
over at [background, its class], a detection left over at [its class, background]. VOC's "difficult" objects count
nowhere, and neither does a detection paired with one (the devkit ignores both).
"""

import os

import numpy as np

from metrics import pixel_iou
from utils import corners_to_voc


def confusion_matrix(instances, detections, labels, score_threshold, iou_threshold=0.5):
    """-> counts (n + 1, n + 1), rows the detected class, columns the true class, the last of each background."""
    n = len(labels)
    index = {label: k for k, label in enumerate(labels)}
    counts = np.zeros((n + 1, n + 1), np.int64)
    for instance, (boxes, scores, class_ids) in zip(instances, detections):
        objects = [o for o in instance["object"] if o["name"] in index]
        gt = np.array([[o["xmin"], o["ymin"], o["xmax"], o["ymax"]] for o in objects], np.float64).reshape(-1, 4)
        gt_class = np.array([index[o["name"]] for o in objects], np.int64)
        difficult = np.array([bool(o.get("difficult")) for o in objects], bool)
        kept = np.asarray(scores) >= score_threshold
        det = corners_to_voc(np.asarray(boxes)[kept]).reshape(-1, 4)
        det_class = np.asarray(class_ids)[kept].astype(np.int64)
        pairs = match_pairs(pixel_iou(det, gt) if len(det) and len(gt) else np.zeros((len(det), len(gt))),
                            iou_threshold)  # fmt: skip
        paired_det, paired_gt = set(), set()
        for d, g in pairs:
            paired_det.add(d)
            paired_gt.add(g)
            if not difficult[g]:
                counts[det_class[d], gt_class[g]] += 1
        for g in range(len(gt)):
            if g not in paired_gt and not difficult[g]:
                counts[n, gt_class[g]] += 1
        for d in range(len(det)):
            if d not in paired_det:
                counts[det_class[d], n] += 1
    return counts


def match_pairs(ious, iou_threshold):
    """[(detection, object)] by descending IoU above the threshold, each index at most once."""
    candidates = np.argwhere(ious > iou_threshold)
    order = np.argsort(-ious[candidates[:, 0], candidates[:, 1]], kind="stable")
    pairs, used_det, used_gt = [], set(), set()
    for d, g in candidates[order]:
        if d not in used_det and g not in used_gt:
            pairs.append((int(d), int(g)))
            used_det.add(d)
            used_gt.add(g)
    return pairs


def confusion_summary(counts, labels, score_threshold, iou_threshold=0.5):
    """The JSON form stored in results.json."""
    return {"score_threshold": score_threshold, "iou_threshold": iou_threshold, "rows": "detected class",
            "columns": "true class", "labels": [*labels, "background"], "counts": counts.tolist()}  # fmt: skip


def plot_confusion_matrix(counts, labels, score_threshold, path):
    """confusion_matrix.png: each true class's column normalised to 1 (background's column by its own total),
    the counts written in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [*labels, "background"]
    totals = counts.sum(axis=0, keepdims=True)
    normalised = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    side = min(max(5.0, 0.45 * len(names) + 2.5), 16.0)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=90 if len(names) > 6 else 0, fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("true class")
    ax.set_ylabel("detected class")
    ax.set_title(f"confusion matrix: score >= {score_threshold:g}, IoU 0.5\neach true class's column sums to 1",
                 fontsize=10)  # fmt: skip
    if len(names) <= 25:
        for (row, col), value in np.ndenumerate(counts):
            if value:
                color = "white" if normalised[row, col] > 0.5 else "black"
                ax.text(col, row, f"{normalised[row, col]:.2f}\n{value}", ha="center", va="center", fontsize=7,
                        color=color)  # fmt: skip
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
