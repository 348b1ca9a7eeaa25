"""Data: VOC XML parsing and target encoding (batching in batches.py, augmentation in augmentation.py, image
reading in images.py).

Each stage is its own function (parse_voc_xml, augment / resize_for_network, encode_targets) so a
faster pipeline can replace one without the others. Boxes travel
as float arrays (N, 4) of xmin, ymin, xmax, ymax: VOC pixels in the parsed objects, continuous
corners from instance_boxes on (utils.voc_to_corners), normalised to 0..1 after the warp.
"""

import math
import os
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np
from tqdm import tqdm

from image_frames import fit_to_image, image_header
from images import IMAGE_EXTENSIONS, printable
from utils import shape_iou, voc_to_corners

PROGRESS_FROM = 2000  # files: a first parse this long shows a progress bar (parse_cache keeps later runs short)


@dataclass
class ParseReport:
    """Counts of what parsing skipped or fixed, so one bad file never stops a run."""

    files: int = 0
    skipped_files: list = field(default_factory=list)  # (path, reason)
    clipped_boxes: int = 0
    dropped_boxes: int = 0  # zero area after clipping
    unknown_labels: Counter = field(default_factory=Counter)
    difficult: int = 0
    bad_lines: list = field(default_factory=list)  # (file:line, reason) of YOLO / COCO labels
    unlabelled_images: int = 0  # no object of the labels (or no label file): background images, not trained on
    empty_label_files: int = 0
    swapped_boxes: int = 0  # xmin > xmax or ymin > ymax: the corners swapped
    duplicate_objects: int = 0  # the same label and box twice in one image: kept once
    bad_boxes: list = field(default_factory=list)  # (path, reason): a box that is not numbers, skipped
    turned_images: list = field(default_factory=list)  # (path, how): boxes moved into the decoded image's frame
    path_filenames: int = 0  # an absolute <filename> or one with "..": read as its base name in the image folder
    unannotated_images: int = 0  # images in a folder pair's image folder that no annotation names

    def summary(self):
        lines = [f"{self.files} annotation files read"]
        if self.skipped_files:
            lines.append(f"{len(self.skipped_files)} skipped:")
            lines += [f"  {printable(path)}: {reason}" for path, reason in self.skipped_files[:10]]
            if len(self.skipped_files) > 10:
                lines.append(f"  ... and {len(self.skipped_files) - 10} more")
        if self.clipped_boxes:
            lines.append(f"{self.clipped_boxes} boxes reached outside their image and were clipped")
        if self.dropped_boxes:
            lines.append(f"{self.dropped_boxes} boxes of zero area were dropped")
        if self.unknown_labels:
            shown = ", ".join(f"{k} ({v})" for k, v in self.unknown_labels.most_common(8))
            lines.append(f"objects with labels not in `labels`, ignored: {shown}")
        if self.difficult:
            lines.append(f"{self.difficult} objects marked difficult: kept for evaluation, not trained on")
        if self.bad_lines:
            lines.append(f"{len(self.bad_lines)} label lines skipped:")
            lines += [f"  {where}: {reason}" for where, reason in self.bad_lines[:10]]
            if len(self.bad_lines) > 10:
                lines.append(f"  ... and {len(self.bad_lines) - 10} more")
        for what, entries in (
            ("boxes skipped (not finite numbers)", self.bad_boxes),
            ("images whose boxes were moved into the decoded image's frame", self.turned_images),
        ):
            if entries:
                lines.append(f"{len(entries)} {what}:")
                lines += [f"  {printable(path)}: {reason}" for path, reason in entries[:10]]
                if len(entries) > 10:
                    lines.append(f"  ... and {len(entries) - 10} more")
        for count, what in (
            (self.swapped_boxes, "boxes had their corners swapped (xmin > xmax or ymin > ymax)"),
            (self.duplicate_objects, "duplicate objects (same label and box in one image) dropped"),
            (self.path_filenames, "<filename>s held folders: read as base names in the image folder"),
            (self.unannotated_images, "images in the image folder have no annotation (not trained on)"),
        ):
            if count:
                lines.append(f"{count} {what}")
        if self.unlabelled_images or self.empty_label_files:
            empty = f" ({self.empty_label_files} with an empty label file)" if self.empty_label_files else ""
            lines.append(f"{self.unlabelled_images + self.empty_label_files} images without objects of the configured "
                         f"labels{empty}, not trained on")  # fmt: skip
        return "\n".join(lines)


def parse_voc_xml(path, labels=None, report=None):
    """Reads one VOC XML file -> dict(filename, width, height, object=[...]) or None if unusable.

    Objects carry name, xmin, ymin, xmax, ymax (VOC 1-based pixels) and difficult.
    """
    report = report if report is not None else ParseReport()
    report.files += 1
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        report.skipped_files.append((path, f"unreadable XML ({e})"))
        return None
    filename = root.findtext("filename")
    size = root.find("size")
    try:
        width, height = int(float(size.findtext("width"))), int(float(size.findtext("height")))
    except (AttributeError, TypeError, ValueError):
        width = height = 0
    if not filename:
        report.skipped_files.append((path, "no <filename>"))
        return None
    objects = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if labels and name not in labels:
            report.unknown_labels[name] += 1
            continue
        box = obj.find("bndbox")
        try:
            coords = [float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
        except (AttributeError, TypeError, ValueError):
            report.skipped_files.append((path, f"object {name!r} has no valid <bndbox>; object skipped"))
            continue
        if not all(math.isfinite(c) for c in coords):
            report.bad_boxes.append((path, f"object {name!r} has the box {coords}"))
            continue
        difficult = (obj.findtext("difficult") or "0").strip() == "1"
        obj_record = {"name": name, "difficult": difficult, "box": coords}
        if obj_record in objects:
            report.duplicate_objects += 1
            continue
        objects.append(obj_record)
    return {"filename": filename, "width": width, "height": height, "object": objects}


def clip_objects(instance, report):
    """Clips boxes to the image (VOC pixels 1..W) and drops empty ones, counting both."""
    width, height = instance["width"], instance["height"]
    kept = []
    for obj in instance["object"]:
        xmin, ymin, xmax, ymax = obj.pop("box")
        if xmin > xmax or ymin > ymax:
            report.swapped_boxes += 1
            xmin, xmax, ymin, ymax = min(xmin, xmax), max(xmin, xmax), min(ymin, ymax), max(ymin, ymax)
        clipped = [
            min(max(xmin, 1), width),
            min(max(ymin, 1), height),
            min(max(xmax, 1), width),
            min(max(ymax, 1), height),
        ]
        if clipped != [xmin, ymin, xmax, ymax]:
            report.clipped_boxes += 1
        if clipped[2] - clipped[0] < 1 or clipped[3] - clipped[1] < 1:
            report.dropped_boxes += 1
            continue
        obj.update(zip(("xmin", "ymin", "xmax", "ymax"), clipped))
        if obj["difficult"]:
            report.difficult += 1
        kept.append(obj)
    instance["object"] = kept
    return instance


def find_image(img_dir, filename):
    """The image named by an annotation; tries other extensions (some datasets rename)."""
    path = os.path.join(img_dir, filename)
    if os.path.exists(path):
        return path
    stem = os.path.splitext(filename)[0]
    for ext in IMAGE_EXTENSIONS + tuple(e.upper() for e in IMAGE_EXTENSIONS):
        if os.path.exists(os.path.join(img_dir, stem + ext)):
            return os.path.join(img_dir, stem + ext)
    return None


def parse_annotation(ann_dir, img_dir, labels=(), ann_files=None, report=None):
    """keras-yolo2's entry point: -> (instances, seen_labels).

    Only objects whose label is in `labels` are kept (all if empty) and only images
    with at least one such object. Problems are counted in `report`, never raised.
    """
    report = report if report is not None else ParseReport()
    folder_pair = ann_files is None  # then every image in img_dir should have its annotation
    if folder_pair:
        ann_files = sorted(f for f in os.listdir(ann_dir) if f.endswith(".xml"))
    instances, seen, referenced = [], Counter(), set()
    for ann in tqdm(ann_files, desc="parsing annotations", unit="file", leave=False,
                    disable=True if len(ann_files) < PROGRESS_FROM else None):  # fmt: skip
        path = os.path.join(ann_dir, ann)
        instance = parse_voc_xml(path, labels, report)
        if instance is None:
            continue
        name = instance["filename"].replace("\\", "/")
        if os.path.isabs(name) or ".." in name.split("/"):  # keras-yolo2 joined it to img_dir, reaching outside
            report.path_filenames += 1
            instance["filename"] = os.path.basename(name)
        image_path = find_image(img_dir, instance["filename"])
        referenced.add(os.path.normpath(image_path or ""))
        if image_path is None:
            report.skipped_files.append((path, f"image {instance['filename']} not found in {img_dir}"))
            continue
        instance["filename"] = image_path
        header, problem = image_header(image_path)
        if header is None:
            report.skipped_files.append((path, f"its image {printable(image_path)} {problem}"))
            continue
        fit_to_image(instance, header, report, image_path)
        clip_objects(instance, report)
        if instance["object"]:
            instances.append(instance)
            seen.update(obj["name"] for obj in instance["object"])
        else:
            report.unlabelled_images += 1
    if folder_pair and os.path.isdir(img_dir):
        report.unannotated_images += sum(f.lower().endswith(IMAGE_EXTENSIONS) and
                                         os.path.normpath(os.path.join(img_dir, f)) not in referenced
                                         for f in os.listdir(img_dir))  # fmt: skip
    return instances, dict(seen)


def instance_boxes(instance, train=True):
    """Boxes (N, 4) in continuous pixel coords and class names; difficult objects left out when training."""
    objects = [o for o in instance["object"] if not (train and o["difficult"])]
    boxes = voc_to_corners([[o["xmin"], o["ymin"], o["xmax"], o["ymax"]] for o in objects], np.float32)
    return boxes, [o["name"] for o in objects]


def best_anchor(box_w, box_h, anchors):
    """bias_match: the anchor whose shape (both centred at the origin) has the best IoU with the box."""
    return int(best_anchors(np.array([[box_w, box_h]], np.float32), anchors)[0])


def best_anchors(wh, anchors):
    """best_anchor for every row of (N, 2) box shapes at once."""
    return np.argmax(shape_iou(wh, np.asarray(anchors, np.float32).reshape(-1, 2)), axis=1)


def encode_targets(boxes, class_ids, grid_hw, anchors, nb_class, max_box_per_image):
    """Normalised boxes (N, 4) -> (y_grid (gh, gw, nb_box, 4+1+nb_class), true_boxes (max_box, 4)).

    Each box goes to the cell holding its centre and to its best-shape anchor (darknet's
    bias_match); a later box in the same slot replaces an earlier one, as in darknet.
    Coordinates are in grid units: x, y of the centre, width, height. All boxes at once, no loop.
    """
    grid_h, grid_w = grid_hw
    nb_box = len(anchors) // 2
    y_grid = np.zeros((grid_h, grid_w, nb_box, 4 + 1 + nb_class), np.float32)
    true_boxes = np.zeros((max_box_per_image, 4), np.float32)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if not len(boxes):
        return y_grid, true_boxes
    centre_x, centre_y = (boxes[:, 0] + boxes[:, 2]) / 2 * grid_w, (boxes[:, 1] + boxes[:, 3]) / 2 * grid_h
    width, height = (boxes[:, 2] - boxes[:, 0]) * grid_w, (boxes[:, 3] - boxes[:, 1]) * grid_h
    xywh = np.stack([centre_x, centre_y, width, height], axis=1)
    i = np.minimum(centre_x.astype(np.int64), grid_w - 1)
    j = np.minimum(centre_y.astype(np.int64), grid_h - 1)
    a = best_anchors(xywh[:, 2:], anchors)
    # the last box wins a shared slot: keep each slot's last occurrence
    slots = (j * grid_w + i) * nb_box + a
    _, last_from_end = np.unique(slots[::-1], return_index=True)
    last = len(slots) - 1 - last_from_end
    values = np.zeros((len(last), 4 + 1 + nb_class), np.float32)
    values[:, :4], values[:, 4] = xywh[last], 1.0
    values[np.arange(len(last)), 5 + np.asarray(class_ids, np.int64)[last]] = 1.0
    y_grid[j[last], i[last], a[last]] = values
    kept = min(len(boxes), max_box_per_image)
    true_boxes[:kept] = xywh[:kept]
    return y_grid, true_boxes


@dataclass(frozen=True)
class TargetLayout:
    """What a detector takes and is trained against: the shapes BatchGenerator produces for it."""

    labels: list
    input_hw: tuple
    grid_hw: tuple
    anchors: list
    max_box_per_image: int
    channels: int

    @classmethod
    def of(cls, yolo):
        return cls(yolo.labels, (yolo.input_h, yolo.input_w), (yolo.grid_h, yolo.grid_w), yolo.anchors,
                   yolo.max_box_per_image, yolo.input_channels)  # fmt: skip

    def at(self, side):
        """The same layout for a square input of `side` pixels (multi-scale training), at the same stride."""
        stride = self.input_hw[0] // self.grid_hw[0]
        return replace(self, input_hw=(side, side), grid_hw=(side // stride, side // stride))


# darknet's random=1 (detector.c, train_detector): a new size every 10 batches, the largest for the last 200.
