"""End to end: main.py's messages, dataset layouts, run folders, resuming, and that training learns."""

import json
import os
import warnings

import cv2
import h5py
import numpy as np
import pytest
from conftest import ROOT

import main as cli
from backends import Backend
from config import build_config
from datasets import load_datasets, split_train_valid
from demo_data import write_split
from frontend import YOLO
from weight_files import save_backend_weights


@pytest.mark.slow
def test_missing_dataset_is_one_clear_message(tmp_path, run_cli):
    config = {"train": {"voc_dir": str(tmp_path / "VOCdevkit" / "VOC2012")}}
    (tmp_path / "c.json").write_text(json.dumps(config))
    done = run_cli(["--config", str(tmp_path / "c.json")])
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert str(tmp_path / "VOCdevkit" / "VOC2012") in done.stderr
    assert "JPEGImages" in done.stderr and "VOCtrainval_11-May-2012.tar" in done.stderr
    assert "python main.py --config configs/demo.json" in done.stderr


def test_frozen_backend_without_weights_is_refused(tmp_path, capsys, demo_like_config):
    if os.path.exists(os.path.join(ROOT, "weights", "mobilenet_backend.h5")):
        pytest.skip("weights/mobilenet_backend.h5 is present: the frozen backend has its weights")
    path, config = demo_like_config(tmp_path)
    config["model"].update(freeze_backend=True, backend_weights="")  # the default file, absent
    (tmp_path / "frozen.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--config", str(tmp_path / "frozen.json")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "mobilenet_backend.h5" in err and "--unfreeze" in err
    runs = tmp_path / "runs"  # nothing was started: no run folder (the parsed annotations' cache may be there)
    assert not runs.exists() or [p.name for p in runs.iterdir()] == ["cache"]


def test_backend_weights_none_trains_from_scratch_and_needs_an_unfrozen_backend(
    tmp_path, capsys, monkeypatch, demo_like_config
):
    path, config = demo_like_config(tmp_path)
    config["model"].update(freeze_backend=True, backend_weights="none")
    (tmp_path / "scratch.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit):
        cli.main(["--config", str(tmp_path / "scratch.json")])
    assert 'backend_weights is "none"' in capsys.readouterr().err

    source = YOLO("MobileNet", 64, ["a"], 2, [1, 1], backend_options={"alpha": 0.25}, load_pretrained=False)
    save_backend_weights(source.backend_model, str(tmp_path / "present.h5"))
    monkeypatch.setattr(Backend, "default_weights_path", lambda self: str(tmp_path / "present.h5"))
    assert YOLO("MobileNet", 64, ["a"], 2, [1, 1], backend_options={"alpha": 0.25}).backend_weights is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "randomly initialised" warning either: it is what was asked
        scratch = YOLO("MobileNet", 64, ["a"], 2, [1, 1], backend_options={"alpha": 0.25}, backend_weights="none")
    assert scratch.backend_weights is None


def voc_tree(root, names_by_split):
    voc = root / "VOCdevkit" / "VOC2012"
    write_split(str(root / "tmp"), sum(len(v) for v in names_by_split.values()), seed=3, size=(96, 96))
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    os.rename(root / "tmp" / "images", voc / "JPEGImages")
    os.rename(root / "tmp" / "annotations", voc / "Annotations")
    for split, names in names_by_split.items():
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(n + "\n" for n in names))
    return voc


def test_voc2012_layout_uses_train_and_val_lists_and_label_filter(tmp_path):
    names = [f"shapes_{i:04d}" for i in range(10)]
    voc = voc_tree(tmp_path, {"train": names[:7], "val": names[7:]})
    config = build_config({"model": {"labels": ["triangle"]}, "train": {"voc_dir": str(voc)}})
    train, valid, _ = load_datasets(config)
    stems = lambda instances: {os.path.basename(i["filename"])[:-4] for i in instances}  # noqa: E731
    assert stems(train) <= set(names[:7]) and stems(valid) <= set(names[7:])
    assert {o["name"] for i in train + valid for o in i["object"]} == {"triangle"}


def test_empty_validation_set_is_a_seeded_80_20_split():
    items = list(range(50))
    a_train, a_valid = split_train_valid(items, seed=4)
    b_train, b_valid = split_train_valid(items, seed=4)
    assert (len(a_train), len(a_valid)) == (40, 10) and a_valid == b_valid
    assert sorted(a_train + a_valid) == items


@pytest.mark.slow
def test_training_run_writes_its_outputs_and_resumes(tmp_path, demo_like_config):
    path, _ = demo_like_config(tmp_path)
    results = cli.main(["--config", path, "--verbose", "0"])
    run = tmp_path / "runs" / "t"
    for name in ("config.json", "best.weights.h5", "last.weights.h5", "resume.h5", "history.csv", "val_batch0_pred.jpg",
                 "training_curves.png", "results.json", "train_batch0.jpg", "train_batch2.jpg"):  # fmt: skip
        assert (run / name).exists(), name
    assert len(os.listdir(run / "predictions")) == 2
    assert 0 <= results["map"] <= 1
    image = cv2.imread(str(run / "training_curves.png"))
    assert image is not None and image.shape[1] > 500

    cli.main(["--resume", str(run), "--epochs", "2", "--verbose", "0"])
    with open(run / "history.csv") as f:
        assert [line.split(",")[0] for line in f.read().split()[1:]] == ["1", "2"]  # epochs counted from 1
    with h5py.File(run / "resume.h5") as f:
        assert f.attrs["epoch"] == 2
        # the optimizer's step counter continued: 2 epochs of 2 batches
        assert any(np.asarray(f["optimizer"][k]).shape == () and int(np.asarray(f["optimizer"][k])) == 4
                   for k in f["optimizer"])  # fmt: skip
    assert not (tmp_path / "runs" / "t2").exists()


@pytest.mark.slow
@pytest.mark.xdist_group("overfit_detector")  # the export tests' worker: the detector is trained once
def test_overfits_a_few_images(overfit_detector):
    """A few images, no augmentation: the trained model must find every box (IoU >= 0.5, right class). The
    detector is the session's (conftest.py), which the export tests also read."""
    from numpy_detect import box_iou

    from detections import detect_files

    yolo, instances, _ = overfit_detector
    labels = yolo.labels
    found = total = 0
    detected = detect_files(yolo, [i["filename"] for i in instances], {"score_threshold": 0.3, "nms_threshold": 0.45,
                                                                         "max_detections": 300})  # fmt: skip
    for instance, (_, _, (boxes, _scores, classes)) in zip(instances, detected):
        for obj in instance["object"]:
            total += 1
            truth = np.array([[obj["xmin"] - 1, obj["ymin"] - 1, obj["xmax"], obj["ymax"]]])
            same_class = classes == labels.index(obj["name"])
            if same_class.any() and box_iou(truth, boxes[same_class]).max() >= 0.5:
                found += 1
    assert total >= 10 and found == total, f"found {found} of {total} boxes"


@pytest.mark.slow
def test_the_recipe_learns_to_detect_shapes_it_never_saw(tmp_path):
    """The learning check (tests/learning_check.py): the demo's config, from a backbone that learned shapes, trains a
    new head on 200 new images; its mAP on 60 more goes from near 0 after the first epoch to >= 0.5 after the 8th.
    `python tests/learning_check.py` measured seeds 0-4 here: 0.06-0.13 after epoch 1, 0.60-0.68 after epoch 8,
    34-38 s each. The demo itself, from a random backbone: scripts/readme_figures.py."""
    from learning_check import learn

    first, last, _ = learn(str(tmp_path))
    assert first < 0.25 and last >= 0.5, (first, last)
