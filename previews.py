"""Pictures a run folder gets so a glance shows what the model saw and found: train_batch0..2.jpg (the first
training batches as the model gets them, their targets' boxes drawn) and val_batch0_labels.jpg next to
val_batch0_pred.jpg (the first validation images with their annotations, and with the detections)."""

import os

import cv2
import numpy as np

from images import decode_image, write_image
from utils import draw_boxes, voc_to_corners

TILE = 256  # px: the side each validation image is resized to in its mosaic


def target_boxes(grid, input_hw):
    """The boxes a training target grid (gh, gw, nb_box, 5 + classes) asks for -> (corners in input pixels (N, 4),
    class ids): what the loss will pull the predictions to, read back from the encoded target."""
    cells = grid[..., 4] > 0
    xywh, class_ids = grid[cells][:, :4], np.argmax(grid[cells][:, 5:], axis=-1)
    scale = np.array([input_hw[1] / grid.shape[1], input_hw[0] / grid.shape[0]] * 2, np.float32)
    corners = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], axis=1) * scale
    return corners, class_ids


def write_batch_previews(generator, labels, out_dir, count=3, columns=4):
    """train_batch0.jpg ...: the first `count` training batches as the model gets them (augmented), with the boxes
    of their targets drawn, so a glance shows whether labels and augmentation line up. -> the paths."""
    paths = []
    for k in range(count):
        x, y = generator.make_batch(k)
        tiles = []
        for image, grid in zip(x["input_image"], y["grid"]):
            rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image
            boxes, class_ids = target_boxes(grid, rgb.shape[:2])
            tiles.append(draw_boxes(rgb, boxes, None, class_ids, labels))
        paths.append(write_mosaic(tiles, os.path.join(out_dir, f"train_batch{k}.jpg"), columns))
    return paths


def write_validation_mosaics(instances, detections, labels, out_dir, score_threshold, count=16, columns=4):
    """val_batch0_labels.jpg and val_batch0_pred.jpg: the first `count` validation images, each resized to TILE,
    with their annotations, and with the detections scoring score_threshold or more. -> the two paths."""
    truth, found = [], []
    for instance, (boxes, scores, class_ids) in zip(instances[:count], detections[:count]):
        image = decode_image(instance["filename"])
        if image is None:
            continue
        scale = np.array([TILE / image.shape[1], TILE / image.shape[0]] * 2)
        tile = cv2.resize(image, (TILE, TILE), interpolation=cv2.INTER_AREA)
        objects = instance["object"]
        corners = voc_to_corners([[o["xmin"], o["ymin"], o["xmax"], o["ymax"]] for o in objects]).reshape(-1, 4)
        truth.append(draw_boxes(tile, corners * scale, None, [labels.index(o["name"]) for o in objects], labels))
        shown = scores >= score_threshold
        found.append(draw_boxes(tile, boxes[shown] * scale, scores[shown], class_ids[shown], labels))
    if not truth:
        return []
    return [write_mosaic(truth, os.path.join(out_dir, "val_batch0_labels.jpg"), columns),
            write_mosaic(found, os.path.join(out_dir, "val_batch0_pred.jpg"), columns)]  # fmt: skip


def write_mosaic(tiles, path, columns):
    """RGB tiles of one size, `columns` a row (the last row padded black), written as a JPEG -> path."""
    tiles = tiles + [np.zeros_like(tiles[0])] * (-len(tiles) % columns)
    rows = [np.concatenate(tiles[r : r + columns], axis=1) for r in range(0, len(tiles), columns)]
    write_image(path, np.concatenate(rows, axis=0))
    return path
