"""Finding the data a config points at: the VOC layout (one or several VOCdevkit folders, fetched when
missing and asked to), folder pairs, the embedded demo."""

import os
import sys

import numpy as np

from dataset_formats import dataset_format, read_dataset, source_files
from demo_data import ensure_demo_dataset
from downloads import VOC_DATASETS, fetch_voc
from errors import UserError
from parse_cache import cached_parse
from preprocessing import ParseReport, parse_annotation

DEMO_COMMAND = "python main.py --config configs/demo.json"


class DatasetError(UserError):
    """A dataset that is not where the config says, or holds nothing to train on."""


def _missing(what, path, hint):
    return DatasetError(
        f"{what} not found: {os.path.abspath(path)}\n{hint}\n"
        f"To try the tool without downloading anything, run the embedded demo:\n  {DEMO_COMMAND}"
    )


def read_split(voc_dir, split):
    path = os.path.join(voc_dir, "ImageSets", "Main", f"{split}.txt")
    if not os.path.exists(path):
        raise _missing(f"VOC image set '{split}'", path, voc_hint(voc_dir))
    with open(path) as f:
        return [line.split()[0] for line in f if line.strip()]


def voc_name(voc_dir):
    """ "voc2012" for .../VOCdevkit/VOC2012 (a dataset downloads.fetch_voc can fetch), else None."""
    name = os.path.basename(os.path.normpath(voc_dir)).lower()
    return name if name in VOC_DATASETS else None


def voc_hint(voc_dir):
    name = voc_name(voc_dir) or "voc2012"
    archives = " and ".join(os.path.basename(url) for url, _ in VOC_DATASETS[name]["archives"])
    root = os.path.dirname(os.path.dirname(os.path.abspath(voc_dir))) or "."
    return (
        "PASCAL VOC is expected in its standard layout: "
        "VOCdevkit/VOC2012/{JPEGImages,Annotations,ImageSets/Main/train.txt,val.txt}.\n"
        f"Get it ({VOC_DATASETS[name]['size']}, {archives}) with:\n  python main.py data download {name} --out {root}\n"
        "or add --download to this command, or point train.voc_dir in your config at your copy (or use "
        "train_image_folder / train_annot_folder)."
    )


def ensure_voc(voc_dir, download):
    """Fetches a missing VOC2012 / VOC2007 folder when `download` is set or the user says yes at a prompt
    (only in a terminal); otherwise says where it was expected and how to get it."""
    if os.path.isdir(os.path.join(voc_dir, "Annotations")):
        return
    name = voc_name(voc_dir)
    if name and not download and sys.stdin.isatty() and not os.environ.get("CI"):
        answer = input(f"PASCAL {VOC_DATASETS[name]['folder']} ({VOC_DATASETS[name]['size']}) is not in {voc_dir}. "
                       "Download it now? [y/N] ")  # fmt: skip
        download = answer.strip().lower() in ("y", "yes")
    if not (name and download):
        raise _missing("PASCAL VOC", voc_dir, voc_hint(voc_dir))
    fetch_voc(name, root=os.path.dirname(os.path.dirname(os.path.normpath(voc_dir))) or ".")


def load_voc(voc_dirs, split, labels, report, cache_dir):
    """The images of image set `split` (train, val, trainval, test) of each VOCdevkit folder, in order."""
    instances = []
    for voc_dir in voc_dirs:
        instances += load_voc_split(voc_dir, split, labels, report, cache_dir)
    return instances


def load_voc_split(voc_dir, split, labels, report, cache_dir):
    ann_dir, img_dir = os.path.join(voc_dir, "Annotations"), os.path.join(voc_dir, "JPEGImages")
    ann_files = [n + ".xml" for n in read_split(voc_dir, split)]
    files = [os.path.join(voc_dir, "ImageSets", "Main", f"{split}.txt"), img_dir]
    files += [os.path.join(ann_dir, f) for f in ann_files]
    return cached_parse(cache_dir, files, {"voc": voc_dir, "split": split, "labels": labels},
                        lambda r: parse_annotation(ann_dir, img_dir, labels, ann_files=ann_files, report=r)[0], report)  # fmt: skip


def load_folders(img_dir, ann_dir, labels, report, cache_dir):
    for path, what in ((ann_dir, "Annotation folder"), (img_dir, "Image folder")):
        if not os.path.isdir(path):
            raise _missing(what, path, "Check train/valid *_folder paths in your config.")
    files = [img_dir, ann_dir] + [os.path.join(ann_dir, f) for f in os.listdir(ann_dir) if f.endswith(".xml")]
    return cached_parse(cache_dir, files, {"folders": [img_dir, ann_dir], "labels": labels},
                        lambda r: parse_annotation(ann_dir, img_dir, labels, report=r)[0], report)  # fmt: skip


def load_dataset_file(path, split, labels, report, cache_dir, image_folder):
    return cached_parse(cache_dir, source_files(path, split), {"dataset": path, "split": split, "labels": labels,
                                                               "images": image_folder},
                        lambda r: read_dataset(path, split, labels, r, image_folder)[0], report)  # fmt: skip


def load_dataset_files(train, valid, labels, reports, cache_dir):
    """train.dataset (YOLO data.yaml, darknet obj.data, COCO JSON): its train split, and valid.dataset's or its
    own val split for validation."""
    train_set = load_dataset_file(train["dataset"], "train", labels, reports["train"], cache_dir,
                                  train["train_image_folder"])  # fmt: skip
    valid_file = valid["dataset"] or (train["dataset"] if dataset_format(train["dataset"]) != "coco" else "")
    valid_set = []
    if valid_file:
        valid_set = load_dataset_file(
            valid_file, "val", labels, reports["valid"], cache_dir, valid["valid_image_folder"]
        )
    return train_set, valid_set


def split_train_valid(instances, fraction=0.8, seed=0):
    """Seeded 80/20 split for when no validation set is configured."""
    order = np.random.default_rng(seed).permutation(len(instances))
    cut = int(round(len(instances) * fraction))
    return [instances[i] for i in order[:cut]], [instances[i] for i in order[cut:]]


def as_list(paths):
    return [paths] if isinstance(paths, str) else list(paths)


def label_counts(instances):
    counts = {}
    for instance in instances:
        for obj in instance["object"]:
            counts[obj["name"]] = counts.get(obj["name"], 0) + 1
    return counts


def check_label_counts(labels, seen_labels, where, other_labels=()):
    """A configured label that never occurs means a typo or the wrong dataset: stop early."""
    missing = [label for label in labels if seen_labels.get(label, 0) == 0]
    if missing:
        counts = ", ".join(f"{label} {seen_labels.get(label, 0)}" for label in labels)
        others = f"; labels in the data not in model.labels: {', '.join(sorted(other_labels))}" if other_labels else ""
        raise DatasetError(f"{where}: no annotations for model.labels {missing} (objects per label: {counts}{others})")


def load_datasets(config):
    """-> (train instances, validation instances, reports) for a full config dict."""
    train, valid, labels = config["train"], config["valid"], config["model"]["labels"]
    if train["demo_dataset"]:
        ensure_demo_dataset(train["demo_dataset"])
    reports = {"train": ParseReport(), "valid": ParseReport()}
    cache_dir = train["cache_dir"] or os.path.join(train["runs_dir"], "cache")
    if train["dataset"]:
        train_set, valid_set = load_dataset_files(train, valid, labels, reports, cache_dir)
    elif train["train_annot_folder"]:
        train_set = load_folders(train["train_image_folder"], train["train_annot_folder"], labels, reports["train"],
                                 cache_dir)  # fmt: skip
        valid_set = []
        if valid["valid_annot_folder"]:
            valid_set = load_folders(valid["valid_image_folder"], valid["valid_annot_folder"], labels, reports["valid"],
                                     cache_dir)  # fmt: skip
    elif train["voc_dir"]:
        train_dirs = as_list(train["voc_dir"])
        valid_dirs = as_list(valid["valid_voc_dir"] or train["voc_dir"])
        for voc_dir in dict.fromkeys(train_dirs + valid_dirs):
            ensure_voc(voc_dir, train["download_data"])
        train_set = load_voc(train_dirs, train["train_split"], labels, reports["train"], cache_dir)
        valid_set = load_voc(valid_dirs, valid["valid_split"], labels, reports["valid"], cache_dir)
    else:
        raise DatasetError(
            "No dataset configured: set train.voc_dir (VOC2012 layout), train.train_image_folder and "
            "train.train_annot_folder (VOC XML), or train.dataset (a YOLO data.yaml, darknet obj.data or COCO "
            f"JSON).\nDemo: {DEMO_COMMAND}"
        )
    if not train_set:
        raise DatasetError(f"No usable training images with labels {labels}.\n{reports['train'].summary()}")
    check_label_counts(labels, label_counts(train_set), "training set", reports["train"].unknown_labels)
    if not valid_set:
        train_set, valid_set = split_train_valid(train_set, seed=train["seed"])
        print(f"No validation set configured: using a seeded 80/20 split ({len(train_set)} / {len(valid_set)} images).")
    return train_set, valid_set, reports
