"""The bad-input harness: a corpus of broken and odd images and annotations (bad_corpus.py) parsed, trained on,
evaluated and predicted over; every case must be counted and named, and every run must finish."""

import json
import os

import cv2
import numpy as np
import pytest
from bad_corpus import write_corpus

import main as cli
from image_frames import turn_voc_box
from images import decode_image
from preprocessing import ParseReport, parse_annotation

LABELS = ["ellipse", "rectangle", "triangle"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    return root, write_corpus(str(root))


def test_parsing_names_every_case(corpus):
    root, expected = corpus
    report = ParseReport()
    instances, _ = parse_annotation(str(root / "annotations"), str(root / "images"), LABELS, report=report)
    summary = report.summary()
    for case, named in expected.items():
        if named:
            assert named in summary, f"{case}: {named!r} not in\n{summary}"
    kept = {os.path.basename(i["filename"]) for i in instances}
    assert {"truncated.jpg", "cmyk.jpg", "sixteen.png", "pal.png", "large.jpg", "a b ü.jpg", "rotated.jpg"} <= kept
    assert not kept & {"zero_byte.jpg", "text.jpg", "fifo.jpg", "one_pixel.png", "absent.jpg"}
    assert report.unannotated_images == 2  # orphan.jpg and the Latin-1 name
    crowd = next(i for i in instances if len(i["object"]) == 200)
    assert crowd["filename"].endswith("shapes_0004.jpg")
    by_name = {os.path.basename(i["filename"]): i for i in instances}
    assert [o["xmin"] for o in by_name["resized.jpg"]["object"]] == [10.5]  # (20 - 1) / 2 + 1: scaled to 64 px


def test_exif_turned_boxes_land_on_the_pixels_opencv_decodes(tmp_path):
    """Each orientation: a white block drawn in the stored frame; after decoding (OpenCV applies the EXIF tag) the
    block's bounding box is where turn_voc_box puts the annotated box."""
    from PIL import Image

    stored = np.zeros((60, 100, 3), np.uint8)
    stored[10:25, 20:50] = 255  # rows 10..24, columns 20..49: VOC box (21, 11, 50, 25)
    for orientation in range(1, 9):
        image = Image.fromarray(stored)
        exif = image.getexif()
        exif[0x0112] = orientation
        path = str(tmp_path / f"o{orientation}.jpg")
        image.save(path, exif=exif.tobytes(), quality=100)
        decoded = decode_image(path)[..., 0] > 128
        rows, cols = np.nonzero(decoded)
        seen = [cols.min() + 1, rows.min() + 1, cols.max() + 1, rows.max() + 1]
        assert turn_voc_box([21, 11, 50, 25], orientation, 100, 60) == pytest.approx(seen, abs=1), orientation


def test_a_training_box_given_as_a_detection_scores_ap_1_on_a_rotated_image(corpus, tmp_path, capsys):
    """The boxes training learns from are the boxes evaluation scores against, also for an EXIF-turned photo."""
    root, _ = corpus
    folder = tmp_path / "one"
    (folder / "images").mkdir(parents=True)
    (folder / "annotations").mkdir()
    for name in ("rotated.jpg", "shapes_0000.jpg"):
        os.link(root / "images" / name, folder / "images" / name)
        stem = os.path.splitext(name)[0]
        os.link(root / "annotations" / f"{stem}.xml", folder / "annotations" / f"{stem}.xml")
    instances, _ = parse_annotation(str(folder / "annotations"), str(folder / "images"), LABELS)
    records = [{"image": os.path.basename(i["filename"]), "label": o["name"], "score": 0.9, "xmin": o["xmin"] - 1,
                "ymin": o["ymin"] - 1, "xmax": o["xmax"], "ymax": o["ymax"]}
               for i in instances for o in i["object"]]  # fmt: skip
    (tmp_path / "dets.json").write_text(json.dumps(records))
    results = cli.main(["evaluate", "--detections", str(tmp_path / "dets.json"), "--annotations",
                        str(folder / "annotations"), "--images", str(folder / "images"), "--output",
                        str(tmp_path / "e")])  # fmt: skip
    assert results["map"] == pytest.approx(1.0), capsys.readouterr().out


@pytest.mark.slow
def test_training_evaluation_and_prediction_survive_the_corpus(corpus, tmp_path, demo_like_config, capfd):
    root, expected = corpus
    path, config = demo_like_config(tmp_path, nb_epochs=1)
    config["train"].update(train_image_folder=str(root / "images"), train_annot_folder=str(root / "annotations"))
    config["valid"].update(valid_image_folder=str(root / "images"), valid_annot_folder=str(root / "annotations"))
    (tmp_path / "corpus.json").write_text(json.dumps(config))
    results = cli.main(["--config", str(tmp_path / "corpus.json"), "--verbose", "0"])
    out = capfd.readouterr()
    printed = out.out + out.err
    for case, named in expected.items():
        if named:
            assert named in printed, f"{case}: {named!r} not in the training output"
    assert "do not decode (damaged or truncated) and are left out" in printed and "truncated.jpg" in printed
    assert 0 <= results["map"] <= 1
    weights = str(tmp_path / "runs" / "t" / "best.weights.h5")
    evaluation = cli.main(["evaluate", "-w", weights, "--config", str(tmp_path / "corpus.json")])
    assert evaluation["map"] == pytest.approx(results["map"], abs=1e-6)
    records = cli.main(["predict", "-w", weights, "-i", str(root / "images"), "--threshold", "0.0", "--output",
                        str(tmp_path / "p")])  # fmt: skip
    out = capfd.readouterr()
    assert "fifo.jpg is not a regular file" in out.err and "text.jpg" in out.out
    written = set(os.listdir(os.fsencode(tmp_path / "p")))
    assert b"k\xe4nguru.jpg" in written and "a b ü.jpg".encode() in written
    assert {r["image"] for r in records} >= {"cmyk.jpg", "large.jpg", os.fsdecode(b"k\xe4nguru.jpg")}
    assert cv2.imdecode(np.fromfile(os.path.join(tmp_path / "p", "large.jpg"), np.uint8), cv2.IMREAD_COLOR) is not None


def test_prediction_on_nothing_readable_is_one_error_not_a_silent_success(tmp_path):
    """Image names that hold no image (a FIFO, text), in a folder or given alone: main.py's exit 2 and one line."""
    from frontend import YOLO
    from predict import PredictionError, run_prediction

    yolo = YOLO("MobileNet", 64, ["a"], 2, [1, 1], backend_options={"alpha": 0.25}, load_pretrained=False)
    folder = tmp_path / "images"
    folder.mkdir()
    os.mkfifo(folder / "fifo.jpg")
    (folder / "text.png").write_text("not an image")
    detection_args = {"score_threshold": 0.3, "nms_threshold": 0.45, "max_detections": 10}
    for source, count in ((folder, 2), (folder / "fifo.jpg", 1)):
        with pytest.raises(PredictionError, match=rf"Nothing predicted: none of the {count} image file\(s\) could"):
            run_prediction(yolo, str(source), str(tmp_path / "out"), detection_args)
