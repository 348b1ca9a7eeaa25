"""main.py data check: the figures of a split against hand-computed ones, labels.png, and the short form training
prints."""

import pytest

import main as cli
from data_check import format_summary, summarize
from preprocessing import ParseReport


def test_summary_figures_by_hand():
    """One 100 x 100 image at a 200 x 200 input: a 10 px box (20 px at the input) and a 50 x 25 one (100 x 50);
    anchors 1x1 and 3x1.5 grid cells (32 x 32 and 96 x 48 px). Best shape IoUs: 400 / 1024 and 4608 / 5000."""
    instance = {"filename": "a.jpg", "width": 100, "height": 100, "object": [
        {"name": "A", "difficult": False, "xmin": 1, "ymin": 1, "xmax": 10, "ymax": 10},
        {"name": "B", "difficult": False, "xmin": 1, "ymin": 1, "xmax": 50, "ymax": 25}]}  # fmt: skip
    figures = summarize([instance], ["A", "B", "C"], (200, 200), [1, 1, 3, 1.5])
    assert figures["per_class"] == {"A": 1, "B": 1, "C": 0} and figures["images"] == 1 and figures["objects"] == 2
    assert figures["objects_per_image"] == {"mean": 2.0, "max": 2}
    assert figures["anchor_iou"] == pytest.approx((400 / 1024 + 4608 / 5000) / 2)
    assert figures["box_side_px"]["median"] == pytest.approx((20 + 5000**0.5) / 2)
    assert figures["small_boxes"] == 0
    text = format_summary("train", figures, ParseReport(files=1))
    assert [line.split() for line in text.splitlines()[1:4]] == [["A", "1"], ["B", "1"], ["C", "0", "<-", "none"]]


def test_data_check_prints_each_split_and_draws_labels(tmp_path, demo_like_config, capsys):
    path, _ = demo_like_config(tmp_path, train_count=6, valid_count=3)
    (tmp_path / "shapes" / "train" / "annotations" / "shapes_0000.xml").write_text("<annotation>")  # broken
    summaries = cli.main(["data", "check", "-c", path, "--output", str(tmp_path / "check")])
    out = capsys.readouterr().out
    assert summaries["train"]["images"] == 5 and summaries["valid"]["images"] == 3
    assert "[train] 5 images" in out and "[valid] 3 images" in out and "average IoU" in out
    assert "shapes_0000.xml: unreadable XML" in out  # the skipped file, with its reason
    assert (tmp_path / "check" / "labels.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_images_without_objects_of_the_labels_are_counted(tmp_path, demo_like_config):
    from preprocessing import parse_annotation

    _, config = demo_like_config(tmp_path, train_count=4, valid_count=1)
    report = ParseReport()
    instances, _ = parse_annotation(config["train"]["train_annot_folder"], config["train"]["train_image_folder"],
                                    ["no such label"], report=report)  # fmt: skip
    assert instances == [] and report.unlabelled_images == 4
    assert "4 images without objects of the configured labels" in report.summary()


def test_batch_previews_draw_the_targets_where_the_boxes_are(tmp_path, demo_like_config, plain_batches):
    """Without augmentation the boxes read back from the encoded targets are the annotation boxes resized to the
    input (to 1e-3 px); the preview mosaics are written, 4 images a row."""
    import cv2
    import numpy as np

    from frontend import YOLO
    from preprocessing import instance_boxes, parse_annotation
    from previews import target_boxes, write_batch_previews

    _, config = demo_like_config(tmp_path, train_count=8)
    labels = config["model"]["labels"]
    instances, _ = parse_annotation(
        config["train"]["train_annot_folder"], config["train"]["train_image_folder"], labels
    )
    yolo = YOLO("MobileNet", 128, labels, 6, [1.0, 1.0, 2.5, 2.5], backend_options={"alpha": 0.25},
                load_pretrained=False)  # fmt: skip
    generator = plain_batches(instances, yolo, batch_size=4)
    x, y = generator.make_batch(0)
    found = 0
    for b in range(4):
        boxes, class_ids = target_boxes(y["grid"][b], (128, 128))
        index = int(generator.order(0)[b])
        truth, names = instance_boxes(instances[index])
        truth = truth * 128 / np.array([instances[index]["width"], instances[index]["height"]] * 2)
        for box, c in zip(boxes, class_ids):
            distance = np.abs(truth - box).max(axis=1)
            assert distance.min() < 1e-3 and names[int(distance.argmin())] == labels[c]
            found += 1
    assert found >= 4
    paths = write_batch_previews(generator, labels, str(tmp_path), count=2)
    mosaic = cv2.imread(paths[1])
    assert [p.rsplit("/", 1)[1] for p in paths] == ["train_batch0.jpg", "train_batch1.jpg"]
    assert mosaic.shape == (128, 4 * 128, 3)


def test_validation_mosaics_draw_labels_and_detections_where_they_are(tmp_path):
    """A gray 100 x 50 image with one object at continuous corners (10, 5, 50, 25): at the 256 px tile its box's
    top edge runs along y = 26 from x = 26 in the class colour; a detection below the threshold is not drawn."""
    import cv2
    import numpy as np

    from previews import TILE, write_validation_mosaics
    from utils import class_colors

    cv2.imwrite(str(tmp_path / "a.png"), np.full((50, 100, 3), 128, np.uint8))
    instance = {"filename": str(tmp_path / "a.png"), "width": 100, "height": 50,
                "object": [{"name": "b", "difficult": False, "xmin": 11, "ymin": 6, "xmax": 50, "ymax": 25}]}  # fmt: skip
    detections = [(np.array([[10.0, 5.0, 50.0, 25.0]]), np.array([0.2]), np.array([1]))]
    labels_path, pred_path = write_validation_mosaics([instance], detections, ["a", "b"], str(tmp_path), 0.3)
    truth, found = cv2.imread(labels_path)[..., ::-1], cv2.imread(pred_path)[..., ::-1]
    assert truth.shape == found.shape == (TILE, 4 * TILE, 3)
    edge, inside = truth[26, 60:120].astype(int), truth[60, 60:120].astype(int)  # right of the caption
    colour = np.array(class_colors(2)[1])
    # the JPEG's chroma subsampling blends a 1 px line with the gray: it moves towards the class colour
    assert (np.sign(edge - 128) * np.sign(colour - 128) >= 0).all() and np.abs(edge - 128).max() > 50
    assert np.abs(inside - 128).max() < 20 and np.abs(found[26, 60:120].astype(int) - 128).max() < 20  # 0.2 < 0.3
