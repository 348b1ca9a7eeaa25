"""Detections: a detector run over image files in batches, and the detections-file format both ways.

Detections file (what `predict --json` writes, what `evaluate --detections` reads): a JSON list of
    {"image": "2008_000008.jpg", "label": "horse", "score": 0.91,
     "xmin": 53.0, "ymin": 87.0, "xmax": 471.0, "ymax": 420.0}
one record per detection, in pixels of the original image and in the VOC convention (1-based,
inclusive, the same numbers as the annotation XML). Images are matched to annotations by file name
without extension; "image_id" is accepted for "image". Inside the project a detection is the arrays
(boxes as continuous corners, scores, class ids); utils.corners_to_voc converts.
"""

import json
import os

import numpy as np
from tqdm import tqdm

from errors import UserError
from images import decode_image
from utils import corners_to_voc, voc_to_corners

RECORD_KEYS = ("label", "score", "xmin", "ymin", "xmax", "ymax")


class DetectionsFileError(UserError):
    """A detections file that is missing or malformed."""


def detect_files(yolo, paths, detection_args, batch_size=8, desc="detect", progress=True, read=decode_image):
    """Yields (path, RGB image or None, detection or None) for each path in order, `batch_size` images a
    forward pass; unreadable files give (path, None, None). detection_args: config.detection_args; `read`
    reads one image (image_cache.ImageCache.read skips the decoding)."""
    bar = tqdm(range(0, len(paths), batch_size), desc=desc, unit="batch", disable=None if progress else True,
               leave=False)  # fmt: skip
    for start in bar:
        batch = [(path, read(path)) for path in paths[start : start + batch_size]]
        found = iter(yolo.detect([image for _, image in batch if image is not None], **detection_args))
        for path, image in batch:
            yield path, image, None if image is None else next(found)


def to_records(detection, labels):
    """(continuous corners, scores, class ids) -> detection records in the VOC pixel convention."""
    boxes, scores, class_ids = detection
    return [
        {"label": labels[int(c)], "score": float(s), **dict(zip(RECORD_KEYS[2:], map(float, b)))}
        for b, s, c in zip(corners_to_voc(boxes), scores, class_ids)
    ]


def detection_records(image_name, detection, labels):
    """One image's detections as detections-file records."""
    return [{"image": image_name, **record} for record in to_records(detection, labels)]


def image_key(name):
    return os.path.splitext(os.path.basename(str(name)))[0]


def load_detections_file(path, coco=None):
    """Reads and checks a detections JSON file -> list of records (see the module docstring). COCO results are
    converted with `coco` = ({image id: file name}, {category id: name}) of their ground truth."""
    try:
        with open(path) as f:
            records = json.load(f)
    except FileNotFoundError:
        raise DetectionsFileError(f"Detections file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DetectionsFileError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(records, list):
        raise DetectionsFileError(f"{path}: expected a JSON list of detection records, got {type(records).__name__}")
    if is_coco_results(records):
        if coco is None:
            raise DetectionsFileError(f"{path} holds COCO results (image_id, category_id, bbox): score them against "
                                      "a COCO JSON ground truth (--annotations instances_val.json)")  # fmt: skip
        records = from_coco_results(records, path, *coco)
    for k, record in enumerate(records):
        if not isinstance(record, dict):
            raise DetectionsFileError(f"{path}: record {k} is not an object: {record!r}")
        if "image" not in record and "image_id" in record:
            record["image"] = record["image_id"]
        missing = [key for key in ("image",) + RECORD_KEYS if key not in record]
        if missing:
            raise DetectionsFileError(f"{path}: record {k} lacks {', '.join(missing)}: {record!r}")
        try:
            for key in RECORD_KEYS[1:]:
                record[key] = float(record[key])
        except (TypeError, ValueError):
            raise DetectionsFileError(f"{path}: record {k} has a non-numeric score or coordinate: {record!r}") from None
        record["label"] = str(record["label"])
    return records


def from_coco_results(results, path, image_names, category_names):
    """COCO results ({"image_id", "category_id", "bbox": [x, y, w, h] in continuous pixels, "score"}, what COCO
    tools write) -> detection records, named by the ground truth's image file names and category names. Unknown
    image ids keep their id as the image (reported as not scored)."""
    records = []
    for k, r in enumerate(results):
        if not isinstance(r, dict) or r.get("category_id") not in category_names or "score" not in r:
            raise DetectionsFileError(f"{path}: COCO result {k} has no score or a category_id the ground truth "
                                      f"lacks: {r!r}")  # fmt: skip
        try:
            x, y, w, h = map(float, r["bbox"])
        except (KeyError, TypeError, ValueError):
            raise DetectionsFileError(f"{path}: COCO result {k} has no x, y, w, h bbox: {r!r}") from None
        records.append({"image": str(image_names.get(r.get("image_id"), r.get("image_id"))),
                        "label": category_names[r["category_id"]], "score": float(r["score"]),
                        "xmin": x + 1, "ymin": y + 1, "xmax": x + w, "ymax": y + h})  # fmt: skip
    return records


def is_coco_results(records):
    return bool(records) and isinstance(records[0], dict) and "bbox" in records[0] and "category_id" in records[0]


def records_to_detections(records, instances, labels):
    """Detection records -> per-instance (continuous pixel corners, scores, class ids), and the count of
    records per image that has no annotation."""
    index = {instance["image"]: i for i, instance in enumerate(instances)}
    class_of = {label: c for c, label in enumerate(labels)}
    per_image = [[] for _ in instances]
    unmatched = {}
    for r in records:
        key = image_key(r["image"])
        if key not in index:
            unmatched[key] = unmatched.get(key, 0) + 1
        elif r["label"] in class_of:
            per_image[index[key]].append((r["xmin"], r["ymin"], r["xmax"], r["ymax"], r["score"], class_of[r["label"]]))
    detections = []
    for rows in per_image:
        rows = np.array(rows, np.float64).reshape(-1, 6)
        detections.append((voc_to_corners(rows[:, :4]), rows[:, 4], rows[:, 5].astype(np.int64)))
    return detections, unmatched
