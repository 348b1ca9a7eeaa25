"""Datasets in the forms people have them, read into the instances VOC XML gives (preprocessing.parse_voc_xml):
{"filename", "width", "height", "object": [{"name", "difficult", "xmin", "ymin", "xmax", "ymax"}]} in VOC's pixel
convention (1-based, inclusive: continuous corners x0, y0, x1, y1 are xmin - 1, ymin - 1, xmax, ymax).

* YOLO text labels: one .txt per image, a line `class cx cy w h` per object, normalised to 0..1.
  - ultralytics `data.yaml`: `path` (root), `train`, `val` (image folders, list files, or lists of them), `names`
    (a list or {id: name}). An image's labels are found by swapping its last `images` folder for `labels`.
  - darknet `obj.data`: `train`, `valid` (list files of image paths), `names` (a names file). Labels sit beside the
    image, or in a `labels` folder in place of `images` / `JPEGImages`, as darknet looks for them.
* COCO JSON (`instances_*.json`): `images` (id, file_name, width, height), `annotations` (image_id, category_id,
  `bbox` x, y, w, h in continuous pixels, iscrowd), `categories` (id, name). iscrowd objects become VOC's
  difficult ones: evaluated, not trained on.

`read_dataset(path, split, labels, report)` reads either; bad lines and files are counted in the ParseReport and
skipped, never raised.
"""

import json
import os

import yaml
from tqdm import tqdm

from errors import UserError
from image_frames import fit_to_image, image_header
from images import IMAGE_EXTENSIONS
from preprocessing import PROGRESS_FROM, ParseReport, clip_objects

FORMATS = {".yaml": "yolo", ".yml": "yolo", ".data": "darknet", ".json": "coco"}


class DatasetFormatError(UserError):
    pass


def dataset_format(path):
    """ "yolo" (data.yaml), "darknet" (obj.data) or "coco" (a JSON file), from the file name."""
    kind = FORMATS.get(os.path.splitext(path)[1].lower())
    if kind is None:
        raise DatasetFormatError(f"{path}: not a dataset file this tool reads (data.yaml, obj.data, COCO .json)")
    if not os.path.isfile(path):
        raise DatasetFormatError(f"Dataset file not found: {path}")
    return kind


def read_dataset(path, split, labels, report=None, image_folder=""):
    """The instances of `split` ("train" or "val") of the dataset file `path` -> (instances, class names)."""
    report = report if report is not None else ParseReport()
    kind = dataset_format(path)
    if kind == "coco":
        return read_coco(path, labels, report, image_folder)
    lists, names = read_yolo_yaml(path, split) if kind == "yolo" else read_darknet_data(path, split)
    images = [image for entry in lists for image in list_images(entry, path)]
    if not images:
        raise DatasetFormatError(f"{path}: no images for '{split}' in {', '.join(lists)}")
    progress = tqdm(images, desc="reading labels", unit="image", leave=False,
                    disable=True if len(images) < PROGRESS_FROM else None)  # fmt: skip
    instances = [instance for image in progress if (instance := read_yolo_image(image, names, labels, report))]
    return instances, names


def source_files(path, split):
    """Every file a read_dataset of `split` reads (for parse_cache's key): the dataset file, and for YOLO
    datasets the image lists, the images and their label files."""
    if dataset_format(path) == "coco":
        return [path]
    lists, _ = read_yolo_yaml(path, split) if dataset_format(path) == "yolo" else read_darknet_data(path, split)
    images = [image for entry in lists for image in list_images(entry, path)]
    return [path, *lists, *images, *map(label_file, images)]


def read_yolo_yaml(path, split):
    """ultralytics data.yaml -> (image folders or list files of `split`, class names)."""
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise DatasetFormatError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(data, dict) or "names" not in data:
        raise DatasetFormatError(f"{path}: a data.yaml needs 'names' and '{split}' (ultralytics layout)")
    names = data["names"]
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    key = "val" if split == "val" and "val" in data else split
    if key not in data or not data[key]:
        return [], [str(n) for n in names]
    root = data.get("path") or ""
    root = root if os.path.isabs(root) else os.path.join(os.path.dirname(os.path.abspath(path)), root)
    entries = data[key] if isinstance(data[key], list) else [data[key]]
    return [os.path.normpath(os.path.join(root, str(e))) for e in entries], [str(n) for n in names]


def read_darknet_data(path, split):
    """darknet obj.data (`key = value` lines) -> (list files of `split`, class names from its names file)."""
    settings = {}
    with open(path) as f:
        for line in f:
            if "=" in line and not line.lstrip().startswith("#"):
                key, value = line.split("=", 1)
                settings[key.strip()] = value.strip()
    if "names" not in settings:
        raise DatasetFormatError(f"{path}: an obj.data needs 'names' (a file of class names) and '{split}'")
    names_path = resolve(settings["names"], path)
    try:
        with open(names_path) as f:
            names = [line.strip() for line in f if line.strip()]
    except OSError:
        raise DatasetFormatError(f"{path}: its names file {names_path} cannot be read") from None
    key = "valid" if split == "val" else split
    return ([resolve(settings[key], path)] if settings.get(key) else []), names


def resolve(entry, dataset_file):
    """darknet paths are relative to the working folder; the dataset file's folder is tried first."""
    beside = os.path.join(os.path.dirname(os.path.abspath(dataset_file)), entry)
    return entry if os.path.isabs(entry) or not os.path.exists(beside) else beside


def list_images(entry, dataset_file):
    """An image folder (searched recursively) or a list file (one image path a line) -> image paths."""
    if os.path.isdir(entry):
        return sorted(os.path.join(d, f) for d, _, files in os.walk(entry) for f in files
                      if f.lower().endswith(IMAGE_EXTENSIONS))  # fmt: skip
    if not os.path.isfile(entry):
        raise DatasetFormatError(f"{dataset_file}: {entry} is neither an image folder nor a list file")
    with open(entry) as f:
        lines = [line.strip() for line in f if line.strip()]
    base = os.path.dirname(os.path.abspath(entry))
    return [line if os.path.isabs(line) or os.path.exists(line) else os.path.join(base, line) for line in lines]


def label_file(image_path):
    """Where YOLO tools keep an image's labels: images/ -> labels/ (ultralytics, darknet's JPEGImages too), or
    beside the image."""
    stem = os.path.splitext(image_path)[0]
    parts = stem.split(os.sep)
    for folder in ("images", "JPEGImages"):
        if folder in parts:
            k = len(parts) - 1 - parts[::-1].index(folder)
            candidate = os.sep.join(parts[:k] + ["labels"] + parts[k + 1 :]) + ".txt"
            if os.path.exists(candidate):
                return candidate
    return stem + ".txt"


def read_yolo_image(image_path, names, labels, report):
    """One image and its label file -> an instance, or None (no usable objects, unreadable image)."""
    report.files += 1
    path = label_file(image_path)
    if not os.path.exists(image_path):
        report.skipped_files.append((image_path, "image not found"))
        return None
    if not os.path.exists(path):
        report.unlabelled_images += 1
        return None
    header, problem = image_header(image_path)
    if header is None:
        report.skipped_files.append((image_path, problem))
        return None
    with open(path, errors="replace") as f:
        lines = [(k, line.split()) for k, line in enumerate(f, 1) if line.strip()]
    if not lines:
        report.empty_label_files += 1
        return None
    (width, height), objects = header[:2], []  # YOLO labels are fractions of the image as decoded (EXIF applied)
    for k, fields in lines:
        box = yolo_box(fields, len(names))
        if isinstance(box, str):
            report.bad_lines.append((f"{path}:{k}", box))
            continue
        name = names[box[0]]
        if labels and name not in labels:
            report.unknown_labels[name] += 1
            continue
        _, cx, cy, w, h = box
        x0, y0, x1, y1 = (cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height
        objects.append({"name": name, "difficult": False, "box": [x0 + 1, y0 + 1, x1, y1]})
    instance = clip_objects({"filename": image_path, "width": width, "height": height, "object": objects}, report)
    return instance if instance["object"] else None


def yolo_box(fields, nb_class):
    """`class cx cy w h` -> (class id, cx, cy, w, h), or the reason the line is unusable."""
    if len(fields) != 5:
        return f"{len(fields)} fields, expected 5 (class cx cy w h)"
    try:
        class_id, values = float(fields[0]), [float(v) for v in fields[1:]]
    except ValueError:
        return "not numbers"
    if class_id != int(class_id) or not 0 <= class_id < nb_class:
        return f"class id {fields[0]} outside 0..{nb_class - 1}"
    if not all(0 <= v <= 1 for v in values) or values[2] <= 0 or values[3] <= 0:
        return "coordinates outside 0..1 (they are normalised to the image size)"
    return (int(class_id), *values)


def read_coco(path, labels, report, image_folder=""):
    """A COCO instances JSON -> (training instances: images with objects whose file exists, category names)."""
    images, by_image, names = load_coco(path)
    folder = image_folder or coco_image_folder(path, images)
    instances = []
    for image in images:
        report.files += 1
        instance = coco_instance(image, by_image.get(image["id"], []), names, labels, report, path, folder)
        if not instance["object"]:
            report.unlabelled_images += 1
        elif not os.path.exists(instance["filename"]):
            report.skipped_files.append((instance["filename"], f"image of {path} not found"))
        elif (header := image_header(instance["filename"]))[0] is None:
            report.skipped_files.append((instance["filename"], header[1]))
        elif clip_objects(fit_to_image(instance, header[0], report, instance["filename"]), report)["object"]:
            instances.append(instance)
    return instances, [names[k] for k in sorted(names)]


def read_coco_ground_truth(path, report):
    """A COCO instances JSON as evaluation ground truth: every image, with objects or not, no image files needed
    -> (instances, {image id: file name}, {category id: name})."""
    images, by_image, names = load_coco(path)
    instances = [clip_objects(coco_instance(image, by_image.get(image["id"], []), names, None, report, path, ""),
                              report) for image in images]  # fmt: skip
    return instances, {image["id"]: image["file_name"] for image in images}, names


def load_coco(path):
    """-> (images, annotations by image id, {category id: name}) of a COCO instances JSON."""
    try:
        with open(path) as f:
            data = json.load(f)
        images, categories = data["images"], data["categories"]
        names = {c["id"]: c["name"] for c in categories}
    except FileNotFoundError:
        raise DatasetFormatError(f"COCO file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetFormatError(f"{path} is not valid JSON: {e}") from None
    except (KeyError, TypeError):
        raise DatasetFormatError(f"{path}: a COCO file needs 'images', 'annotations' and 'categories'") from None
    by_image = {}
    for annotation in data.get("annotations", []):
        by_image.setdefault(annotation.get("image_id"), []).append(annotation)
    return images, by_image, names


def coco_instance(image, annotations, names, labels, report, path, folder):
    """One COCO image and its annotations -> an instance (objects not yet clipped)."""
    objects = []
    for a in annotations:
        name, bbox = names.get(a.get("category_id")), a.get("bbox")
        if name is None or not (isinstance(bbox, list) and len(bbox) == 4):
            report.bad_lines.append((f"{path}: annotation {a.get('id')}", "unknown category_id or no x, y, w, h bbox"))
            continue
        if labels and name not in labels:
            report.unknown_labels[name] += 1
            continue
        x, y, w, h = map(float, bbox)
        objects.append({"name": name, "difficult": bool(a.get("iscrowd")), "box": [x + 1, y + 1, x + w, y + h]})
    return {"filename": os.path.join(folder, image["file_name"]), "width": image["width"], "height": image["height"],
            "object": objects}  # fmt: skip


def coco_image_folder(path, images):
    """COCO's own layout first (annotations/instances_train2017.json beside train2017/), then images/ folders."""
    here = os.path.dirname(os.path.abspath(path))
    split = os.path.splitext(os.path.basename(path))[0].removeprefix("instances_")
    parent = os.path.dirname(here)
    candidates = [os.path.join(parent, split), os.path.join(parent, "images", split), os.path.join(parent, "images"),
                  os.path.join(here, "images"), here]  # fmt: skip
    first = images[0]["file_name"] if images else ""
    for folder in candidates:
        if os.path.exists(os.path.join(folder, first)):
            return folder
    raise DatasetFormatError(f"{path}: its images ({first}, ...) are not in {', '.join(candidates)}; set the image "
                             "folder (train.train_image_folder or valid.valid_image_folder)")  # fmt: skip
