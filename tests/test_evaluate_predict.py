"""main.py evaluate and predict on a small trained run: outputs, agreement between the two paths, errors."""

import base64
import csv
import json
import os
from html.parser import HTMLParser

import cv2
import numpy as np
import pytest

import main as cli
from config import detection_args, load_config
from errors import UserError
from frontend import YOLO
from predict import predict_stream

# every test here uses a trained run (the module fixture trains one); under xdist they share one worker, so it is
# trained once
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("evaluate_predict")]


@pytest.fixture(scope="module")
def run(tmp_path_factory, demo_like_config):
    """A 2-epoch run (mAP evaluated on both) -> (run folder, config path, data folder)."""
    tmp = tmp_path_factory.mktemp("run")
    path, _ = demo_like_config(tmp, nb_epochs=2)
    cli.main(["--config", path, "--verbose", "0"])
    return tmp / "runs" / "t", path, tmp / "shapes"


def test_training_logs_map_and_keeps_best_by_map(run):
    run_dir, _, _ = run
    with open(run_dir / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(0 <= float(r["val_map50"]) <= 1 for r in rows)
    assert (run_dir / "best.weights.h5").exists()
    assert (run_dir / "pr_curves" / "pr_all.png").exists()
    saved = json.loads((run_dir / "results.json").read_text())
    assert set(saved["coco"]) == {"map", "ap50", "ap75"}
    maps = [float(r["val_map50"]) for r in rows]
    assert saved["best_by"] == "val_map50" and saved["best_epoch"] == 1 + maps.index(max(maps))


class ImageTags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.found = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.found.append(dict(attrs))


def test_report_embeds_every_image_of_the_run_folder(run):
    run_dir, _, _ = run
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    parser = ImageTags()
    parser.feed(page)
    on_disk = {p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.suffix in (".png", ".jpg")}
    on_disk -= {p for p in on_disk if p.startswith(("evaluation/", "eval07/"))}  # written by later tests
    shown = [image["alt"] for image in parser.found]
    assert {"training_curves.png", "confusion_matrix.png", "f1_curve.png", "train_batch0.jpg",
            "val_batch0_pred.jpg", "pr_curves/pr_all.png"} <= set(shown)  # fmt: skip
    assert set(shown) == on_disk and len(shown) == len(set(shown))
    for image in parser.found:
        assert (run_dir / image["alt"]).is_file()
        head, data = image["src"].split(",", 1)
        assert head in ("data:image/png;base64", "data:image/jpeg;base64")
        decoded = cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_COLOR)
        assert decoded is not None and decoded.shape == cv2.imread(str(run_dir / image["alt"])).shape
    assert "-- result" in page and "-- run" in page and "&quot;run_name&quot;: &quot;t&quot;" in page


def test_confusion_counts_agree_with_predict_at_the_same_threshold(run, tmp_path):
    run_dir, _, data = run
    weights = str(run_dir / "best.weights.h5")
    cli.main(["evaluate", "-w", weights, "--threshold", "0.02", "--output", str(tmp_path / "e")])
    confusion = json.loads((tmp_path / "e" / "results.json").read_text())["confusion_matrix"]
    counts = confusion["counts"]
    assert confusion["labels"][-1] == "background" and confusion["score_threshold"] == 0.02
    records = cli.main(["predict", "-w", weights, "-i", str(data / "valid" / "images"), "--threshold", "0.02",
                        "--output", str(tmp_path / "p")])  # fmt: skip
    assert records and sum(map(sum, counts[:-1])) == len(records)  # every kept detection in one detected-class row
    n_objects = sum(c["n_gt"] for c in json.loads((tmp_path / "e" / "results.json").read_text())["classes"].values())
    assert sum(row[k] for row in counts for k in range(len(counts) - 1)) == n_objects  # each object in one column
    assert os.path.getsize(tmp_path / "e" / "confusion_matrix.png") > 5000


def test_predict_defaults_to_the_runs_best_f1_threshold(run, tmp_path, capsys):
    run_dir, _, data = run
    best = json.loads((run_dir / "results.json").read_text())["best_f1"]
    images = str(data / "valid" / "images")
    weights = str(run_dir / "best.weights.h5")
    records = cli.main(["predict", "-w", weights, "-i", images, "--output", str(tmp_path / "a")])
    if best["f1"]:
        assert f"Score threshold {best['threshold']:.2f}: the best mean F1" in capsys.readouterr().out
        assert all(r["score"] >= best["threshold"] for r in records)
    floor = cli.main(["predict", "-w", weights, "-i", images, "--threshold", "0.005", "--output", str(tmp_path / "b")])
    assert "best mean F1" not in capsys.readouterr().out  # the flag wins
    assert len(records) == sum(r["score"] >= (best["threshold"] if best["f1"] else 0.3) for r in floor)


def test_evaluate_writes_table_json_and_pr_curves(run, capsys):
    run_dir, _, _ = run
    # no --config: the run's own config.json is used
    results = cli.main(["evaluate", "-w", str(run_dir / "best.weights.h5")])
    out = capsys.readouterr().out
    assert "mAP@0.5" in out and "AP.5:.95" in out and "ellipse" in out
    saved = json.loads((run_dir / "evaluation" / "results.json").read_text())
    assert saved["map"] == pytest.approx(results["map"], abs=1e-6)
    assert saved["metric"] == "VOC2010+ all-point"
    assert sum(c["n_gt"] for c in saved["classes"].values()) > 0
    curves = sorted(os.listdir(run_dir / "evaluation" / "pr_curves"))
    assert curves == ["pr_all.png", "pr_ellipse.png", "pr_rectangle.png", "pr_triangle.png"]
    voc07 = cli.main(["evaluate", "-w", str(run_dir / "best.weights.h5"), "--metric", "voc07", "--output",
                      str(run_dir / "eval07")])  # fmt: skip
    assert json.loads((run_dir / "eval07" / "results.json").read_text())["metric"] == "VOC2007 11-point"
    assert voc07["coco"]["map"] == pytest.approx(results["coco"]["map"])  # COCO AP does not depend on --metric


def test_predict_json_scored_by_evaluate_equals_evaluating_the_weights(run, tmp_path):
    run_dir, _, data = run
    weights = str(run_dir / "best.weights.h5")
    direct = cli.main(["evaluate", "-w", weights, "--output", str(tmp_path / "direct")])
    records = cli.main(["predict", "-w", weights, "-i", str(data / "valid" / "images"), "--threshold", "0.005",
                        "--output", str(tmp_path / "pred"), "--json"])  # fmt: skip
    assert len(os.listdir(tmp_path / "pred")) == 4 + 1  # drawn images and detections.json
    on_file = json.loads((tmp_path / "pred" / "detections.json").read_text())
    assert on_file == records and records
    assert set(records[0]) == {"image", "label", "score", "xmin", "ymin", "xmax", "ymax"}
    scored = cli.main(["evaluate", "--detections", str(tmp_path / "pred" / "detections.json"), "--annotations",
                       str(data / "valid" / "annotations"), "--output", str(tmp_path / "file")])  # fmt: skip
    assert scored["map"] == pytest.approx(direct["map"], abs=1e-6)
    assert scored["coco"]["map"] == pytest.approx(direct["coco"]["map"], abs=1e-6)
    # --images restricts the scored set (image-set list of ids)
    (tmp_path / "two.txt").write_text("shapes_0000\nshapes_0001\n")
    subset = cli.main(["evaluate", "--detections", str(tmp_path / "pred" / "detections.json"), "--annotations",
                       str(data / "valid" / "annotations"), "--images", str(tmp_path / "two.txt"),
                       "--output", str(tmp_path / "two")])  # fmt: skip
    n_objects = sum(c["n_gt"] for c in subset["classes"].values())
    assert 0 < n_objects < sum(c["n_gt"] for c in scored["classes"].values())


def test_python_api_predict(run):
    run_dir, config_path, data = run
    yolo = YOLO.from_config(load_config(str(run_dir / "config.json")), load_pretrained=False)
    yolo.load_weights(str(run_dir / "best.weights.h5"))
    path = str(data / "valid" / "images" / "shapes_0000.jpg")
    rgb = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
    from_path = yolo.predict(path, score_threshold=0.01)
    assert from_path == yolo.predict(rgb, score_threshold=0.01)
    assert from_path and all(0.01 <= d["score"] <= 1 and d["label"] in yolo.labels for d in from_path)
    h, w = rgb.shape[:2]
    assert all(1 <= d["xmin"] <= d["xmax"] <= w and 1 <= d["ymin"] <= d["ymax"] <= h for d in from_path)
    assert [d["score"] for d in from_path] == sorted((d["score"] for d in from_path), reverse=True)
    assert len(yolo.predict([rgb, rgb[:, :80]], score_threshold=0.01)) == 2
    assert yolo.predict(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), score_threshold=0.01) is not None
    with pytest.raises(UserError, match="Cannot read image"):
        yolo.predict(str(data / "missing.jpg"))


def _write_video(path, frames):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, frames[0].shape[1::-1])
    for frame in frames:
        writer.write(frame)
    writer.release()


def test_predict_video_writes_a_video_with_every_frame(run, tmp_path):
    run_dir, _, data = run
    frames = [cv2.imread(str(data / "valid" / "images" / f"shapes_000{i}.jpg")) for i in range(4)]
    _write_video(tmp_path / "clip.mp4", frames + frames[:2])
    records = cli.main(["predict", "-w", str(run_dir / "best.weights.h5"), "-i", str(tmp_path / "clip.mp4"),
                        "--threshold", "0.01", "--output", str(tmp_path / "out"), "--json"])  # fmt: skip
    capture = cv2.VideoCapture(str(tmp_path / "out" / "clip.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    ok, frame = capture.read()
    assert ok and frame.shape == frames[0].shape
    assert {r["frame"] for r in records} <= set(range(6)) and all(r["image"] == "clip.mp4" for r in records)


def test_live_stream_without_display_writes_frames(run, tmp_path):
    run_dir, _, data = run
    frames = [cv2.imread(str(data / "valid" / "images" / f"shapes_000{i}.jpg")) for i in range(3)]
    _write_video(tmp_path / "cam.mp4", frames)
    yolo = YOLO.from_config(load_config(str(run_dir / "config.json")), load_pretrained=False)
    capture = cv2.VideoCapture(str(tmp_path / "cam.mp4"))  # stands in for a camera
    settings = detection_args(load_config(str(run_dir / "config.json")))
    predict_stream(yolo, capture, "webcam0", str(tmp_path / "out"), settings, live=True, show=False, max_frames=2)
    assert sorted(os.listdir(tmp_path / "out" / "webcam0")) == ["frame_000000.jpg", "frame_000001.jpg"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["predict", "-i", "{data}/valid/images"], "needs detector weights"),
        (["predict", "-w", "{w}", "-i", "{data}/nothing.png"], "Input not found"),
        (["predict", "-w", "{w}", "-i", "{data}/valid/annotations/shapes_0000.xml"], "not an image"),
        (["predict", "-w", "{w}", "-i", "9"], "Cannot open webcam 9"),
        (["evaluate", "-w", "{data}/none.weights.h5"], "Detector weights file not found"),
        (["evaluate", "--detections", "{data}/bad.json", "--annotations", "{data}/valid/annotations"], "record 1 lacks score"),
        (["evaluate", "--detections", "{data}/bad.json"], "needs --annotations"),
    ],
)  # fmt: skip
def test_bad_input_is_one_clear_message(run, capsys, argv, message):
    run_dir, _, data = run
    (data / "bad.json").write_text(json.dumps([
        {"image": "shapes_0000.jpg", "label": "ellipse", "score": 0.5, "xmin": 1, "ymin": 1, "xmax": 9, "ymax": 9},
        {"image": "shapes_0000.jpg", "label": "ellipse", "xmin": 1, "ymin": 1, "xmax": 9, "ymax": 9},
    ]))  # fmt: skip
    argv = [a.format(data=data, w=run_dir / "best.weights.h5") for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_weights_of_another_detector_are_a_clear_error(run, tmp_path, capsys):
    run_dir, config_path, _ = run
    config = json.loads(open(config_path).read())
    config["model"]["labels"] = ["ellipse", "rectangle"]
    (tmp_path / "two.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "-w", str(run_dir / "best.weights.h5"), "--config", str(tmp_path / "two.json")])
    assert "was trained as a different detector: labels" in capsys.readouterr().err
