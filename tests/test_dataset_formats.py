"""Datasets as YOLO text labels (ultralytics data.yaml, darknet obj.data) and COCO JSON: the same boxes in every
form give the same instances, anchors and mAP as VOC XML; bad label lines are counted and skipped."""

import json
import os
import shutil

import numpy as np
import pytest

from anchors import find_anchors, instance_shapes
from config import build_config
from dataset_formats import DatasetFormatError, label_file, read_dataset
from datasets import load_datasets
from demo_data import write_split
from evaluate import evaluate_detections
from preprocessing import ParseReport, parse_annotation
from utils import voc_to_corners

LABELS = ["ellipse", "rectangle", "triangle"]


def yolo_lines(instance):
    """VOC pixels (1-based, inclusive) -> `class cx cy w h` normalised, darknet's voc_label.py conversion."""
    lines = []
    for o in instance["object"]:
        x0, y0, x1, y1 = o["xmin"] - 1, o["ymin"] - 1, o["xmax"], o["ymax"]
        w, h = instance["width"], instance["height"]
        lines.append(f"{LABELS.index(o['name'])} {(x0 + x1) / 2 / w!r} {(y0 + y1) / 2 / h!r} {(x1 - x0) / w!r} "
                     f"{(y1 - y0) / h!r}")  # fmt: skip
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def forms(tmp_path_factory):
    """One generated dataset (train 6, val 3 images, 160 x 120) as VOC XML, ultralytics YOLO, darknet YOLO and
    COCO -> {form: (train instances, val instances)} plus the dataset files."""
    root = tmp_path_factory.mktemp("forms")
    voc = {}
    for split, count, seed in (("train", 6, 3), ("val", 3, 4)):
        write_split(str(root / "voc" / split), count, seed=seed, size=(120, 160))
        voc[split] = parse_annotation(str(root / "voc" / split / "annotations"), str(root / "voc" / split / "images"),
                                      LABELS)[0]  # fmt: skip
    ultra, dark, coco = root / "ultra", root / "dark", root / "coco"
    for split, instances in voc.items():
        for folder in (ultra / "images" / split, ultra / "labels" / split, dark / split, coco / split):
            folder.mkdir(parents=True)
        images = []
        for instance in instances:
            name = os.path.basename(instance["filename"])
            for folder in (ultra / "images" / split, dark / split, coco / split):
                shutil.copy(instance["filename"], folder / name)
            stem = os.path.splitext(name)[0]
            (ultra / "labels" / split / f"{stem}.txt").write_text(yolo_lines(instance))
            (dark / split / f"{stem}.txt").write_text(yolo_lines(instance))
            images.append(str(dark / split / name))
        (dark / f"{split}.txt").write_text("\n".join(images) + "\n")
        write_coco(instances, coco / "annotations" / f"instances_{split}.json")
    (ultra / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames:\n  0: ellipse\n"
                                     "  1: rectangle\n  2: triangle\n")  # fmt: skip
    (dark / "obj.names").write_text("\n".join(LABELS) + "\n")
    (dark / "obj.data").write_text(f"classes = 3\ntrain = {dark / 'train.txt'}\nvalid = {dark / 'val.txt'}\n"
                                   "names = obj.names\nbackup = backup/\n")  # fmt: skip
    files = {"yolo": ultra / "data.yaml", "darknet": dark / "obj.data", "coco": coco / "annotations"}
    read = {"voc": (voc["train"], voc["val"])}
    for form in ("yolo", "darknet"):
        read[form] = tuple(read_dataset(str(files[form]), split, LABELS)[0] for split in ("train", "val"))
    read["coco"] = tuple(
        read_dataset(str(files["coco"] / f"instances_{s}.json"), s, LABELS)[0] for s in ("train", "val")
    )
    return read, files


def write_coco(instances, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for k, instance in enumerate(instances, 1):
        images.append({"id": k, "file_name": os.path.basename(instance["filename"]), "width": instance["width"],
                       "height": instance["height"]})  # fmt: skip
        for o in instance["object"]:
            x0, y0 = o["xmin"] - 1, o["ymin"] - 1  # COCO: continuous pixels, top-left origin
            annotations.append({"id": len(annotations) + 1, "image_id": k, "category_id": LABELS.index(o["name"]) + 1,
                                "bbox": [x0, y0, o["xmax"] - x0, o["ymax"] - y0], "iscrowd": 0,
                                "area": (o["xmax"] - x0) * (o["ymax"] - y0)})  # fmt: skip
    categories = [{"id": c + 1, "name": name} for c, name in enumerate(LABELS)]
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))


def boxes_of(instances):
    return [(os.path.basename(i["filename"]), i["width"], i["height"],
             [(o["name"], o["difficult"], o["xmin"], o["ymin"], o["xmax"], o["ymax"]) for o in i["object"]])
            for i in instances]  # fmt: skip


@pytest.mark.parametrize("form", ["yolo", "darknet", "coco"])
def test_every_form_gives_the_voc_instances(forms, form):
    read, _ = forms
    want_all, got_all = boxes_of(read["voc"][0] + read["voc"][1]), boxes_of(read[form][0] + read[form][1])
    assert len(got_all) == len(want_all) == 9
    for want, got in zip(want_all, got_all):
        assert got[:3] == want[:3] and len(got[3]) == len(want[3]) > 0
        for a, b in zip(got[3], want[3]):
            assert a[:2] == b[:2]
            np.testing.assert_allclose(a[2:], b[2:], atol=1e-6)  # pixels


def test_every_form_gives_the_same_anchors_and_map(forms):
    read, _ = forms
    anchors = {form: find_anchors(instance_shapes(train), 3)[0] for form, (train, _) in read.items()}
    for form in ("yolo", "darknet", "coco"):
        np.testing.assert_allclose(anchors[form], anchors["voc"], atol=1e-9)
    rng = np.random.default_rng(0)
    detections = []  # the validation truth, shifted and scored at random, then one false positive per image
    for instance in read["voc"][1]:
        objects = instance["object"]
        truth = voc_to_corners([[o["xmin"], o["ymin"], o["xmax"], o["ymax"]] for o in objects])
        boxes = np.vstack([truth + rng.normal(0, 4, truth.shape), [[0, 0, 20, 20]]])
        classes = np.array([LABELS.index(o["name"]) for o in objects] + [0])
        detections.append((boxes, rng.uniform(0.1, 1, len(boxes)), classes))
    maps = {
        form: evaluate_detections(valid, detections, LABELS, "voc", 0.3)["map"] for form, (_, valid) in read.items()
    }
    assert len(set(maps.values())) == 1 and 0 < maps["voc"] < 1


def test_label_files_in_the_ultralytics_and_darknet_places(tmp_path):
    (tmp_path / "d" / "labels" / "x").mkdir(parents=True)
    (tmp_path / "d" / "labels" / "x" / "a.txt").write_text("")
    assert label_file(str(tmp_path / "d" / "images" / "x" / "a.jpg")) == str(tmp_path / "d" / "labels" / "x" / "a.txt")
    assert label_file(str(tmp_path / "VOC" / "JPEGImages" / "b.jpg")) == str(tmp_path / "VOC" / "JPEGImages" / "b.txt")


def test_bad_label_lines_are_counted_and_skipped(forms, tmp_path):
    _, files = forms
    root = tmp_path / "bad"
    shutil.copytree(files["yolo"].parent, root)
    labels = sorted((root / "labels" / "train").iterdir())
    good = labels[0].read_text()
    labels[0].write_text(good + "1 0.5 0.5 0.2\n7 0.5 0.5 0.2 0.2\n0 1.5 0.5 0.2 0.2\n0 a b c d\n")
    labels[1].write_text("")
    labels[2].unlink()
    report = ParseReport()
    instances, names = read_dataset(str(root / "data.yaml"), "train", LABELS, report)
    assert names == LABELS and len(instances) == 4  # 6 images, one empty, one without labels
    assert [(where.rsplit(":", 1)[1], reason.split(" ")[0]) for where, reason in report.bad_lines] == [
        (str(good.count("\n") + k), word) for k, word in ((1, "4"), (2, "class"), (3, "coordinates"), (4, "not"))
    ]
    assert report.empty_label_files == 1 and report.unlabelled_images == 1
    summary = report.summary()
    assert "4 label lines skipped" in summary and "class id 7 outside 0..2" in summary and "2 images without" in summary


def test_coco_crowds_are_difficult_and_bad_annotations_counted(forms, tmp_path):
    _, files = forms
    data = json.loads((files["coco"] / "instances_train.json").read_text())
    data["annotations"][0]["iscrowd"] = 1
    data["annotations"][1]["category_id"] = 99
    (files["coco"].parent / "train" / "x.json").write_text(json.dumps(data))
    report = ParseReport()
    instances, _ = read_dataset(str(files["coco"].parent / "train" / "x.json"), "train", LABELS, report)
    objects = [o for i in instances for o in i["object"]]
    assert sum(o["difficult"] for o in objects) == 1 and report.difficult == 1
    assert len(report.bad_lines) == 1 and "annotation 2" in report.bad_lines[0][0]


def test_train_dataset_key_trains_on_train_and_validates_on_val(forms):
    read, files = forms
    config = build_config({"model": {"labels": LABELS}, "train": {"dataset": str(files["yolo"])}})
    train, valid, _ = load_datasets(config)
    assert boxes_of(train) == boxes_of(read["yolo"][0]) and boxes_of(valid) == boxes_of(read["yolo"][1])
    coco = build_config({"model": {"labels": LABELS}, "train": {"dataset": str(files["coco"] / "instances_train.json")},
                         "valid": {"dataset": str(files["coco"] / "instances_val.json")}})  # fmt: skip
    train, valid, _ = load_datasets(coco)
    assert len(train) == 6 and len(valid) == 3


@pytest.mark.parametrize(
    "content, name, message",
    [
        (None, "missing.yaml", "Dataset file not found"),
        ("x", "data.txt", "not a dataset file this tool reads"),
        ("train: images\n", "data.yaml", "needs 'names'"),
        ("names: [unclosed\n", "data.yaml", "not valid YAML"),
        ('{"images": []}', "instances_train.json", "needs 'images', 'annotations' and 'categories'"),
        ('{"images": [{"id": 1, "file_name": "gone.jpg", "width": 2, "height": 2}], "categories": []}',
         "instances_train.json", "its images (gone.jpg, ...) are not in"),
        ("names = nothing.names\n", "obj.data", "its names file"),
    ],
)  # fmt: skip
def test_bad_dataset_files_are_one_clear_error(tmp_path, content, name, message):
    if content is not None:
        (tmp_path / name).write_text(content)
    with pytest.raises(DatasetFormatError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_dataset(str(tmp_path / name), "train", LABELS)


def test_coco_results_against_coco_ground_truth_score_as_pycocotools(tmp_path):
    """evaluate --detections with COCO-style results and a COCO JSON: the COCO mAP, AP50 and AP75 of
    pycocotools on the same two files (image and category ids not consecutive)."""
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from evaluate import evaluate_file

    rng = np.random.default_rng(5)
    categories = [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}, {"id": 11, "name": "emu"}]
    images, annotations, results = [], [], []
    for k in range(12):
        image_id = 100 + 7 * k
        images.append({"id": image_id, "file_name": f"img_{k:03d}.jpg", "width": 320, "height": 240})
        for _ in range(rng.integers(1, 5)):
            x, y = rng.uniform(0, 200), rng.uniform(0, 140)
            w, h = rng.uniform(10, 110), rng.uniform(10, 90)
            category = int(rng.choice([3, 7, 11]))
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})  # fmt: skip
            if rng.random() < 0.8:
                jitter = rng.normal(0, 0.1, 4) * [w, h, w, h]
                results.append({"image_id": image_id, "category_id": category, "score": float(rng.random()),
                                "bbox": [float(v) for v in np.array([x, y, w, h]) + jitter]})  # fmt: skip
        results.append({"image_id": image_id, "category_id": 7, "score": float(rng.random() * 0.5),
                        "bbox": [5.0, 5.0, 40.0, 30.0]})  # fmt: skip
    truth, found = tmp_path / "instances_val.json", tmp_path / "results.json"
    truth.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    found.write_text(json.dumps(results))

    ours = evaluate_file(str(found), str(truth), None, str(tmp_path / "out"), "voc", 0.3)
    evaluator = COCOeval(COCO(str(truth)), COCO(str(truth)).loadRes(str(found)), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert sorted(ours["classes"]) == ["cat", "dog", "emu"] and 0.2 < ours["coco"]["map"] < 0.9
    np.testing.assert_allclose([ours["coco"]["map"], ours["coco"]["ap50"], ours["coco"]["ap75"]],
                               evaluator.stats[:3], atol=1e-12)  # fmt: skip


def test_coco_results_need_a_coco_ground_truth(tmp_path):
    from detections import DetectionsFileError, load_detections_file

    (tmp_path / "r.json").write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}]))
    with pytest.raises(DetectionsFileError, match="COCO results .* COCO JSON ground truth"):
        load_detections_file(str(tmp_path / "r.json"))
