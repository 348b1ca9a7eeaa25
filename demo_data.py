"""Generates the embedded demo dataset: coloured shapes on textured backgrounds, VOC format.

Deterministic (seeded), so every machine trains on the same images. Classes differ by shape,
not colour; sizes and aspect ratios vary so anchors and the w/h regression matter.
"""

import os

import cv2
import numpy as np

DEMO_LABELS = ["ellipse", "rectangle", "triangle"]

VOC_XML = """<annotation>
  <folder>demo</folder>
  <filename>{filename}</filename>
  <size><width>{width}</width><height>{height}</height><depth>3</depth></size>
{objects}</annotation>
"""
VOC_OBJECT = """  <object>
    <name>{name}</name>
    <difficult>0</difficult>
    <bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox>
  </object>
"""


def textured_background(rng, size):
    """A colour gradient with blotches and thin lines, so objects must be told from clutter."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c0, c1 = rng.uniform(40, 215, 3), rng.uniform(40, 215, 3)
    t = (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1)) / (w + h) + 0.5
    image = c0 + (c1 - c0) * t[..., None]
    noise = cv2.resize(rng.normal(0, 25, (h // 8, w // 8, 3)).astype(np.float32), (w, h))
    image = np.clip(image + noise + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)
    for _ in range(rng.integers(2, 6)):
        p1, p2 = rng.integers(0, [w, h]), rng.integers(0, [w, h])
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.line(image, (int(p1[0]), int(p1[1])), (int(p2[0]), int(p2[1])), color, 1, cv2.LINE_AA)
    return image


def draw_shape(image, label, box, color):
    xmin, ymin, xmax, ymax = box
    if label == "ellipse":
        center = ((xmin + xmax) // 2, (ymin + ymax) // 2)
        cv2.ellipse(image, center, ((xmax - xmin) // 2, (ymax - ymin) // 2), 0, 0, 360, color, -1, cv2.LINE_AA)
    elif label == "rectangle":
        cv2.rectangle(image, (xmin, ymin), (xmax, ymax), color, -1)
    else:
        points = np.array([[(xmin + xmax) // 2, ymin], [xmin, ymax], [xmax, ymax]], np.int32)
        cv2.fillPoly(image, [points], color, cv2.LINE_AA)


def _overlaps(box, boxes, limit=0.1):
    for other in boxes:
        iw = min(box[2], other[2]) - max(box[0], other[0])
        ih = min(box[3], other[3]) - max(box[1], other[1])
        if iw > 0 and ih > 0:
            smaller = min((box[2] - box[0]) * (box[3] - box[1]), (other[2] - other[0]) * (other[3] - other[1]))
            if iw * ih > limit * smaller:
                return True
    return False


def make_image(rng, size=(192, 192), max_objects=4):
    """-> (RGB uint8 image, [(label, (xmin, ymin, xmax, ymax)) in 0-based pixels])."""
    h, w = size
    image = textured_background(rng, size)
    objects = []
    for _ in range(rng.integers(1, max_objects + 1) * 4):  # tries
        if len(objects) == max_objects:
            break
        side = rng.uniform(0.15, 0.5) * min(h, w)
        aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0)))
        bw, bh = int(side * np.sqrt(aspect)), int(side / np.sqrt(aspect))
        x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
        box = (x0, y0, x0 + bw, y0 + bh)
        if _overlaps(box, [b for _, b in objects]):
            continue
        label = DEMO_LABELS[rng.integers(len(DEMO_LABELS))]
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw_shape(image, label, box, color)
        objects.append((label, box))
        if len(objects) >= rng.integers(1, max_objects + 1):
            break
    return image, objects


def write_split(root, count, seed, size=(192, 192)):
    images_dir, ann_dir = os.path.join(root, "images"), os.path.join(root, "annotations")
    os.makedirs(images_dir, exist_ok=True)
    os.makedirs(ann_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        image, objects = make_image(rng, size)
        name = f"shapes_{i:04d}"
        cv2.imwrite(
            os.path.join(images_dir, name + ".jpg"),
            cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
            [cv2.IMWRITE_JPEG_QUALITY, 92],
        )
        xml_objects = "".join(
            VOC_OBJECT.format(name=label, xmin=b[0] + 1, ymin=b[1] + 1, xmax=b[2], ymax=b[3]) for label, b in objects
        )
        xml = VOC_XML.format(filename=name + ".jpg", width=size[1], height=size[0], objects=xml_objects)
        with open(os.path.join(ann_dir, name + ".xml"), "w") as f:
            f.write(xml)


def ensure_demo_dataset(root, train_count=1000, valid_count=200, seed=2024):
    """Writes root/train and root/valid unless they are already complete; returns True if written."""
    marker = os.path.join(root, ".complete")
    if os.path.exists(marker):
        return False
    print(f"Generating the demo dataset in {root} ({train_count} train + {valid_count} validation images)...")
    write_split(os.path.join(root, "train"), train_count, seed)
    write_split(os.path.join(root, "valid"), valid_count, seed + 1)
    with open(marker, "w") as f:
        f.write(f"{train_count} {valid_count} {seed}\n")
    return True
