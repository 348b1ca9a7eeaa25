"""Anchor selection: k-means on training box shapes with distance 1 - IoU (YOLOv2 paper, section 2).

Boxes are compared by shape only (both centred at the origin). k-means++ seeding and several
seeded restarts, keeping the run with the best average IoU.
"""

import json
import re

import numpy as np

from errors import UserError
from utils import shape_iou, voc_to_corners


class AnchorsError(UserError):
    """Too few boxes to choose anchors from."""


def average_iou(wh, centroids):
    """Mean over boxes of the IoU with their best anchor."""
    return float(np.mean(np.max(shape_iou(wh, centroids), axis=1)))


def kmeans_plus_plus(wh, k, rng):
    centroids = [wh[rng.integers(len(wh))]]
    for _ in range(1, k):
        distance = 1 - np.max(shape_iou(wh, np.array(centroids)), axis=1)
        weights = distance**2
        total = weights.sum()
        index = rng.choice(len(wh), p=weights / total) if total > 0 else rng.integers(len(wh))
        centroids.append(wh[index])
    return np.array(centroids, np.float64)


def kmeans(wh, centroids, max_iter=300):
    """Lloyd iterations with the 1 - IoU distance; centroids move to the mean shape of their boxes."""
    assignment = None
    for _ in range(max_iter):
        new_assignment = np.argmax(shape_iou(wh, centroids), axis=1)
        if assignment is not None and np.array_equal(new_assignment, assignment):
            break
        assignment = new_assignment
        for j in range(len(centroids)):
            members = wh[assignment == j]
            if len(members):
                centroids[j] = members.mean(axis=0)
    return centroids


def find_anchors(wh, k, restarts=10, seed=0):
    """-> (anchors (k, 2) sorted by area, average IoU). wh: (N, 2) box widths and heights, any unit."""
    wh = np.asarray(wh, np.float64).reshape(-1, 2)
    wh = wh[(wh > 0).all(axis=1)]
    if len(wh) < k:
        raise AnchorsError(f"Need at least {k} boxes to choose {k} anchors, the training set has {len(wh)}.")
    rng = np.random.default_rng(seed)
    best, best_iou = None, -1.0
    for _ in range(restarts):
        centroids = kmeans(wh, kmeans_plus_plus(wh, k, rng))
        iou = average_iou(wh, centroids)
        if iou > best_iou:
            best, best_iou = centroids, iou
    return best[np.argsort(best[:, 0] * best[:, 1])], best_iou


def instance_shapes(instances):
    """Box widths and heights relative to their image, (N, 2), difficult objects left out."""
    shapes = []
    for instance in instances:
        objects = [o for o in instance["object"] if not o["difficult"]]
        corners = voc_to_corners([[o["xmin"], o["ymin"], o["xmax"], o["ymax"]] for o in objects])
        shapes.append((corners[:, 2:] - corners[:, :2]) / [instance["width"], instance["height"]])
    return np.concatenate(shapes or [np.zeros((0, 2))]).reshape(-1, 2)


def to_grid_units(anchors, grid_hw):
    """Relative shapes -> the config's anchor list: width, height in grid cells, flattened."""
    grid_h, grid_w = grid_hw
    return [round(float(v), 5) for w, h in anchors for v in (w * grid_w, h * grid_h)]


def write_anchors(config_path, values):
    """model.anchors = `values` in the config file, by with_anchors' text edit (the whole file is written again
    only when its layout defeats the edit) -> what happened to the rest of the file."""
    from weight_files import atomic_write

    with open(config_path, encoding="utf-8-sig") as f:
        text = f.read()
    new, kept = with_anchors(text, values), "the rest of the file as it was"
    if new is None:
        raw = json.loads(text)
        raw.setdefault("model", {})["anchors"] = values
        new, kept = json.dumps(raw, indent=2) + "\n", "the file written again: its layout defeated the edit"
    with atomic_write(config_path) as tmp, open(tmp, "w") as f:
        f.write(new)
    return kept


def with_anchors(text, values):
    """The config file's text with model.anchors set to `values` on one line, everything else as it was (indent,
    key order, other lists). -> the new text, or None when the file is laid out in a way this cannot follow."""
    anchors = "[" + ", ".join(repr(v) for v in values) + "]"
    model = re.search(r'"model"\s*:\s*\{', text)
    if model is None:
        return None
    end = matching_brace(text, model.end() - 1)
    found = re.compile(r'("anchors"\s*:\s*)\[[^\]]*\]').search(text, model.end(), end)
    if found:
        new = text[: found.start()] + found.group(1) + anchors + text[found.end() :]
    else:  # no anchors yet: a first key of the model section, indented as the next line is
        indent = re.match(r"\s*", text[model.end() :]).group(0)
        sep = "," if text[model.end() :].strip()[:1] != "}" else ""
        new = text[: model.end()] + f'{indent}"anchors": {anchors}{sep}' + text[model.end() :]
    raw = json.loads(text)
    raw.setdefault("model", {})["anchors"] = values
    return new if json.loads(new) == raw else None


def matching_brace(text, start):
    """The index of the } closing the { at `start` (strings skipped)."""
    depth, in_string, escaped = 0, False, False
    for k in range(start, len(text)):
        c = text[k]
        if in_string:
            in_string, escaped = (c != '"' or escaped), (c == "\\" and not escaped)
        elif c == '"':
            in_string = True
        elif c in "{}":
            depth += 1 if c == "{" else -1
            if depth == 0:
                return k
    return len(text)
