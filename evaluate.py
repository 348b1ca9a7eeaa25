"""Evaluation: run the detector over a dataset and score it with PASCAL VOC AP at IoU 0.5."""

import numpy as np
from tqdm import tqdm

from preprocessing import decode_image, resize_for_network
from utils import average_precision, detect


def predict_instances(yolo, instances, batch_size=8, obj_thresh=0.005, nms_thresh=0.45, progress=True):
    """-> list, per instance, of (boxes in original pixels, scores, class ids). Unreadable images give no boxes."""
    results = []
    batches = range(0, len(instances), batch_size)
    for start in tqdm(batches, desc="detect", unit="batch", disable=not progress, leave=False):
        chunk = instances[start : start + batch_size]
        images, sizes, readable = [], [], []
        for instance in chunk:
            image = decode_image(instance["filename"])
            readable.append(image is not None)
            if image is None:
                continue
            sizes.append(image.shape[:2])
            images.append(resize_for_network(image, np.zeros((0, 4), np.float32), (yolo.input_h, yolo.input_w))[0])
        detections = iter([])
        if images:
            netout = yolo.inference_model.predict_on_batch(np.stack(images))
            detections = iter(detect(netout, yolo.anchors, sizes, obj_thresh, nms_thresh))
        empty = (np.zeros((0, 4), np.float32), np.zeros(0), np.zeros(0, np.int64))
        results.extend(next(detections) if ok else empty for ok in readable)
    return results


def evaluate_detections(instances, detections, labels, iou_thresh=0.5, score_thresh=0.3):
    """Per-class VOC AP. Ground truth and detections are compared in VOC pixel convention.

    Returns {"classes": {label: {ap, n_gt, precision, recall (at score_thresh)}}, "map": mean AP
    over classes that have ground truth}.
    """
    per_class = {}
    for cls, label in enumerate(labels):
        ground_truth, dets = {}, []
        for image_id, (instance, (boxes, scores, class_ids)) in enumerate(zip(instances, detections)):
            objects = [o for o in instance["object"] if o["name"] == label]
            gt = np.array([[o["xmin"], o["ymin"], o["xmax"], o["ymax"]] for o in objects], np.float64).reshape(-1, 4)
            ground_truth[image_id] = (gt, np.array([o["difficult"] for o in objects], bool))
            for box, score in zip(boxes[class_ids == cls], scores[class_ids == cls]):
                # Continuous 0-based corners -> VOC's 1-based inclusive pixels.
                dets.append((image_id, float(score), np.asarray(box, np.float64) + [1, 1, 0, 0]))
        result = average_precision(dets, ground_truth, iou_thresh)
        at_thresh = result["scores"] >= score_thresh
        n_at = int(np.sum(at_thresh))
        result["precision_at_thresh"] = float(result["precision"][n_at - 1]) if n_at else 0.0
        result["recall_at_thresh"] = float(result["recall"][n_at - 1]) if n_at else 0.0
        per_class[label] = result
    aps = [r["ap"] for r in per_class.values() if r["n_gt"] > 0]
    return {"classes": per_class, "map": float(np.mean(aps)) if aps else float("nan"), "score_thresh": score_thresh}


def format_table(results):
    thresh = results["score_thresh"]
    lines = [f"{'class':<16}{'AP@0.5':>8}{'objects':>9}{f'P@{thresh:g}':>9}{f'R@{thresh:g}':>9}"]
    for label, r in results["classes"].items():
        ap = "-" if r["n_gt"] == 0 else f"{r['ap']:.4f}"
        lines.append(f"{label:<16}{ap:>8}{r['n_gt']:>9}{r['precision_at_thresh']:>9.3f}{r['recall_at_thresh']:>9.3f}")
    lines.append(f"{'mAP@0.5':<16}{results['map']:>8.4f}")
    return "\n".join(lines)
