"""Evaluation: detections on an annotated set -> per-class VOC and COCO AP, a table, JSON, PR curves.

Detections come from this project's detector run over the validation set (`evaluate_model`, the
`MapEvaluation` callback) or from any model's detections file (`evaluate_file`, the format in
detections.py); both are scored by `evaluate_detections`.
"""

import json
import math
import os

import keras
import numpy as np

from config import detection_args
from confusion import confusion_matrix, confusion_summary, plot_confusion_matrix
from dataset_formats import read_coco_ground_truth
from datasets import load_datasets
from detections import detect_files, image_key, load_detections_file, records_to_detections
from errors import UserError
from image_frames import fit_to_image, image_header
from images import IMAGE_EXTENSIONS, decode_image, notice_file
from metrics import COCO_IOU_THRESHOLDS, average_precision, coco_average_precision
from preprocessing import ParseReport, clip_objects, parse_voc_xml
from threshold_curves import plot_threshold_curves, threshold_curves
from utils import corners_to_voc
from weight_files import atomic_write

METRICS = {"voc": "VOC2010+ all-point", "voc07": "VOC2007 11-point"}
# darknet's validation threshold: AP needs the whole precision-recall curve, not only confident boxes
AP_SCORE_FLOOR = 0.005
VOC_IOU_THRESHOLD = 0.5  # a detection matches an object it overlaps by more than this (the VOC devkit's)


class EvaluationError(UserError):
    """Bad input to an evaluation (a missing annotations folder or image list)."""


def predict_instances(yolo, instances, config, progress=True, cache=None):
    """-> (the instances whose image decodes, their detections: boxes in original pixels, scores, class ids) at
    the AP score floor, with the config's NMS. An image that does not decode is left out, named once, so its
    objects do not count as misses. With a `cache` (image_cache.ImageCache) nothing is decoded twice."""
    paths = [instance["filename"] for instance in instances]
    read = cache.read if cache is not None else decode_image
    found = detect_files(yolo, paths, detection_args(config, AP_SCORE_FLOOR), progress=progress, read=read)
    kept = []
    for instance, (_, _, detection) in zip(instances, found):
        if detection is None:
            notice_file(instance["filename"], "does not decode: left out of the evaluation")
        else:
            kept.append((instance, detection))
    return [k[0] for k in kept], [k[1] for k in kept]


def evaluate_detections(instances, detections, labels, metric, score_threshold, iou_threshold=VOC_IOU_THRESHOLD):
    """Per-class AP of `detections` (aligned with `instances`: boxes in continuous pixel corners, scores,
    class ids) against the instances' VOC objects.

    Returns {"classes": {label: {ap, n_gt, n_det, precision/recall at score_threshold, coco AP}},
    "map": mean VOC AP over classes with objects, "coco": {map, ap50, ap75}, "curves": P / R / F1 against the
    score threshold (threshold_curves.py), "confusion": the confusion matrix at score_threshold (confusion.py), and
    the settings}.
    """
    per_class = {}
    for cls, label in enumerate(labels):
        ground_truth, dets = {}, []
        for image_id, (instance, (boxes, scores, class_ids)) in enumerate(zip(instances, detections)):
            objects = [o for o in instance["object"] if o["name"] == label]
            gt = np.array([[o["xmin"], o["ymin"], o["xmax"], o["ymax"]] for o in objects], np.float64).reshape(-1, 4)
            ground_truth[image_id] = (gt, np.array([o["difficult"] for o in objects], bool))
            mine = class_ids == cls
            for box, score in zip(corners_to_voc(boxes[mine]), scores[mine]):
                dets.append((image_id, float(score), box))
        result = average_precision(dets, ground_truth, iou_threshold, metric)
        n_at = int(np.sum(result["scores"] >= score_threshold))
        result["n_det"] = len(dets)
        result["precision_at_threshold"] = float(result["precision"][n_at - 1]) if n_at else 0.0
        result["recall_at_threshold"] = float(result["recall"][n_at - 1]) if n_at else 0.0
        result["coco_ap"] = coco_average_precision(dets, ground_truth)
        per_class[label] = result
    scored = [r for r in per_class.values() if r["n_gt"] > 0]
    coco = np.array([r["coco_ap"] for r in scored]).reshape(-1, len(COCO_IOU_THRESHOLDS))
    results = {
        "metric": metric,
        "iou_threshold": iou_threshold,
        "score_threshold": score_threshold,
        "classes": per_class,
        "map": _mean([r["ap"] for r in scored]),
        "coco": {"map": _mean(coco), "ap50": _mean(coco[:, 0]), "ap75": _mean(coco[:, 5])},
    }
    confusion = confusion_matrix(instances, detections, labels, score_threshold, iou_threshold)
    return {**results, "curves": threshold_curves(results), "confusion": confusion}


def _mean(values):
    values = np.asarray(values, np.float64)
    return float(np.mean(values)) if values.size else float("nan")


def format_table(results):
    thresh, iou = results["score_threshold"], results["iou_threshold"]
    ap_name = f"AP@{iou:g}" + ("/07" if results["metric"] == "voc07" else "")
    head = (
        f"{'class':<16}{ap_name:>10}{'objects':>9}{'dets':>7}{f'P@{thresh:g}':>8}{f'R@{thresh:g}':>8}{'AP.5:.95':>10}"
    )
    lines = [head]
    for label, r in results["classes"].items():
        ap = "-" if r["n_gt"] == 0 else f"{r['ap']:.4f}"
        coco = "-" if r["n_gt"] == 0 else f"{np.mean(r['coco_ap']):.4f}"
        p, rc = r["precision_at_threshold"], r["recall_at_threshold"]
        lines.append(f"{label:<16}{ap:>10}{r['n_gt']:>9}{r['n_det']:>7}{p:>8.3f}{rc:>8.3f}{coco:>10}")
    coco = results["coco"]
    lines.append(f"{'mean':<16}{results['map']:>10.4f}{'':>32}{coco['map']:>10.4f}")
    lines.append(f"{METRICS[results['metric']]} mAP@{iou:g} = {results['map']:.4f}")
    lines.append(f"COCO mAP@[.5:.95] = {coco['map']:.4f}   AP50 = {coco['ap50']:.4f}   AP75 = {coco['ap75']:.4f}")
    highest = max((float(np.max(r["scores"])) for r in results["classes"].values() if len(r["scores"])), default=None)
    if highest is not None and highest < thresh:
        lines.append(f"Note: no detection scores {thresh:g} or more (the highest scores {highest:.4f}), so P and R at "
                     f"{thresh:g} are 0; --score_threshold sets where they are read.")  # fmt: skip
    return "\n".join(lines)


def results_summary(results):
    """The JSON-friendly part of `evaluate_detections`' result (no curves)."""

    def number(x):
        return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 6)

    classes = {
        label: {
            "ap": number(r["ap"]),
            "n_gt": r["n_gt"],
            "n_det": r["n_det"],
            "precision_at_threshold": number(r["precision_at_threshold"]),
            "recall_at_threshold": number(r["recall_at_threshold"]),
            "coco_ap": number(np.mean(r["coco_ap"])) if r["n_gt"] else None,
            "coco_ap50": number(r["coco_ap"][0]) if r["n_gt"] else None,
            "coco_ap75": number(r["coco_ap"][5]) if r["n_gt"] else None,
        }
        for label, r in results["classes"].items()
    }
    return {
        "metric": METRICS[results["metric"]],
        "iou_threshold": results["iou_threshold"],
        "score_threshold": results["score_threshold"],
        "map": number(results["map"]),
        "coco": {k: number(v) for k, v in results["coco"].items()},
        "best_f1": {k: number(v) for k, v in results["curves"]["best"].items()},
        "classes": classes,
        "confusion_matrix": confusion_summary(
            results["confusion"], list(results["classes"]), results["score_threshold"], results["iou_threshold"]
        ),  # fmt: skip
    }


def plot_pr_curves(results, out_dir):
    """One precision-recall PNG per class with objects, and all of them together in pr_all.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    scored = {label: r for label, r in results["classes"].items() if r["n_gt"] > 0}
    paths = []
    all_fig, all_ax = plt.subplots(figsize=(6, 5))
    for label, r in scored.items():
        fig, ax = plt.subplots(figsize=(5, 4))
        for axis in (ax, all_ax):
            # the curve starts at precision 1 before the first detection, like the interpolated AP
            axis.plot(np.r_[0, r["recall"]], np.r_[1, r["precision"]], label=f"{label} (AP {r['ap']:.3f})")
        ax.set_title(f"{label}: AP@{results['iou_threshold']:g} = {r['ap']:.4f}, {r['n_gt']} objects")
        paths.append(_finish_pr_figure(plt, fig, ax, os.path.join(out_dir, f"pr_{_safe(label)}.png")))
    all_ax.set_title(f"mAP@{results['iou_threshold']:g} = {results['map']:.4f}")
    paths.append(_finish_pr_figure(plt, all_fig, all_ax, os.path.join(out_dir, "pr_all.png")))
    return paths


def _finish_pr_figure(plt, fig, ax, path):
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _safe(label):
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in label)


def write_evaluation(results, out_dir):
    """results.json and pr_curves/ in `out_dir`; returns the JSON path."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "results.json")
    with atomic_write(path) as tmp, open(tmp, "w") as f:
        json.dump(results_summary(results), f, indent=2)
    plot_pr_curves(results, os.path.join(out_dir, "pr_curves"))
    plot_threshold_curves(results["curves"], out_dir)
    plot_confusion_matrix(results["confusion"], list(results["classes"]), results["score_threshold"],
                          os.path.join(out_dir, "confusion_matrix.png"))  # fmt: skip
    return path


def evaluate_model(yolo, config, out_dir, metric):
    """`main.py evaluate -w`: a detector with its weights loaded, on the config's validation set."""
    _, valid_set, _ = load_datasets(config)
    print(f"Evaluating on {len(valid_set)} validation images.")
    valid_set, detections = predict_instances(yolo, valid_set, config)
    return report_evaluation(valid_set, detections, yolo.labels, out_dir, metric, config["valid"]["score_threshold"])


def report_evaluation(instances, detections, labels, out_dir, metric, score_threshold):
    results = evaluate_detections(instances, detections, labels, metric, score_threshold)
    print(format_table(results))
    path = write_evaluation(results, out_dir)
    best = results["curves"]["best"]
    if best["f1"]:
        print(f"Best mean F1 {best['f1']:.3f} at score threshold {best['threshold']:.2f} (P {best['precision']:.3f}, "
              f"R {best['recall']:.3f}): predict --score_threshold {best['threshold']:.2f} keeps what balances them.")  # fmt: skip
    else:
        print("Best mean F1 0: no score threshold keeps a detection of an object.")
    print(f"Results: {path}\nPrecision-recall curves: {os.path.join(out_dir, 'pr_curves')}; F1 / P / R against the "
          f"score threshold: {os.path.join(out_dir, 'f1_curve.png')}, p_curve.png, r_curve.png; confusion_matrix.png")  # fmt: skip
    return results


def evaluate_file(detections_path, ann_dir, images, out_dir, metric, score_threshold, labels=None):
    """`main.py evaluate --detections`: any model's detections against a VOC Annotations folder, or COCO results
    against a COCO instances JSON."""
    coco = None
    if ann_dir.lower().endswith(".json"):
        report = ParseReport()
        instances, image_names, category_names = read_coco_ground_truth(ann_dir, report)
        instances = restrict(instances, images, ann_dir)
        coco, labels = (image_names, category_names), labels or [category_names[k] for k in sorted(category_names)]
    else:
        instances, report = load_ground_truth(ann_dir, images)
    if report.skipped_files or report.clipped_boxes or report.bad_lines:
        print(report.summary())
    records = load_detections_file(detections_path, coco)
    if labels is None:
        labels = sorted({o["name"] for i in instances for o in i["object"]} | {r["label"] for r in records})
    detections, unmatched = records_to_detections(records, instances, labels)
    if unmatched:
        shown = ", ".join(sorted(unmatched)[:5])
        print(f"Note: {sum(unmatched.values())} detections on {len(unmatched)} images without annotations "
              f"were not scored ({shown}{', ...' if len(unmatched) > 5 else ''}).")  # fmt: skip
    print(f"Scoring {len(records)} detections on {len(instances)} annotated images, {len(labels)} classes.")
    return report_evaluation(instances, detections, labels, out_dir, metric, score_threshold)


def load_ground_truth(ann_dir, images=None):
    """VOC annotations -> (instances, ParseReport); images without objects stay (their detections are
    false positives). `images`: an image-set list file (one id per line), a folder of images, or None
    for every XML file in `ann_dir`."""
    if not os.path.isdir(ann_dir):
        raise EvaluationError(f"Annotations folder not found: {ann_dir}")
    if images is None:
        keys = sorted(image_key(f) for f in os.listdir(ann_dir) if f.endswith(".xml"))
    else:
        keys = image_keys(images)
    report, instances = ParseReport(), []
    for key in keys:
        path = os.path.join(ann_dir, key + ".xml")
        if not os.path.exists(path):
            report.skipped_files.append((path, "no annotation file for this image"))
            continue
        instance = parse_voc_xml(path, report=report)
        if instance is None:
            continue
        header = (
            image_header(os.path.join(images, instance["filename"]))[0] if images and os.path.isdir(images) else None
        )
        if header:  # the image is here: score in the frame a detector decodes it in, as training does
            fit_to_image(instance, header, report, os.path.join(images, instance["filename"]))
        elif instance["width"] <= 0 or instance["height"] <= 0:  # no <size>: cannot clip, keep the boxes as they are
            instance["width"] = instance["height"] = math.inf
        instance["image"] = key
        instances.append(clip_objects(instance, report))
    if not instances:
        raise EvaluationError(
            f"No annotations to score in {ann_dir}" + (f" for the images in {images}" if images else "")
        )
    return instances, report


def image_keys(images):
    """--images: an image-set list file (one id per line) or a folder of images -> the image keys."""
    if os.path.isdir(images):
        return sorted(image_key(f) for f in os.listdir(images) if f.lower().endswith(IMAGE_EXTENSIONS))
    if os.path.isfile(images):
        with open(images) as f:
            return [image_key(line.split()[0]) for line in f if line.strip()]
    raise EvaluationError(f"--images: {images} is neither an image-set list file nor a folder")


def restrict(instances, images, source):
    """The COCO ground truth's images, keyed by file name, limited to --images when given."""
    for instance in instances:
        instance["image"] = image_key(instance["filename"])
    if images is not None:
        wanted = set(image_keys(images))
        instances = [i for i in instances if i["image"] in wanted]
    if not instances:
        raise EvaluationError(f"No images to score in {source}" + (f" for the images in {images}" if images else ""))
    return instances


class MapEvaluation(keras.callbacks.Callback):
    """Validation mAP@0.5 every `every` epochs (and on the run's first epoch and the last of each stage) as
    logs["val_map50"], so the progress bar, CSV log, TensorBoard and the best-by-mAP checkpoint see it.

    Placed before the callbacks that read it. On epochs in between the key is absent, which the CSV log
    writes as NA and TensorBoard skips.
    """

    def __init__(self, yolo, instances, config, cache=None, last_epoch=None):
        super().__init__()
        self.yolo, self.instances, self.config, self.cache = yolo, instances, config, cache
        self.every, self.last_epoch = config["valid"]["map_every"], last_epoch

    def on_epoch_end(self, epoch, logs=None):
        # the run's first epoch, every `every`-th, and each stage's last: the same epochs however often it resumed
        last = epoch + 1 == (self.last_epoch or self.params.get("epochs"))
        if logs is None or not (epoch == 0 or last or (epoch + 1) % self.every == 0):
            return
        instances, detections = predict_instances(self.yolo, self.instances, self.config, cache=self.cache)
        score_threshold = self.config["valid"]["score_threshold"]
        results = evaluate_detections(instances, detections, self.yolo.labels, "voc", score_threshold)
        logs["val_map50"] = results["map"]
