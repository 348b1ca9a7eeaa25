"""main.py export: a SavedModel with decoding and NMS inside that loads without this project, equal to the
Keras graph, and refused when the written files do not reproduce it."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import SHAPES_JPG

import main as cli
from config import build_config
from export import ExportError, check, export, export_graph
from frontend import YOLO
from images import decode_image

LOADER = r"""
import json, sys
import numpy as np
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
images = np.load(sys.argv[2])
out = model.serve(images)
print(json.dumps({k: np.asarray(v).tolist() for k, v in out.items()}))
"""

SETTINGS = {"score_threshold": 0.01, "nms_threshold": 0.45, "max_detections": 20}


def small_detector():
    keras.utils.set_random_seed(1)
    return YOLO("MobileNet", 96, ["a", "b"], 4, [1.0, 1.0, 2.0, 3.0], backend_options={"alpha": 0.25},
                load_pretrained=False, head_layers=1, head_filters=8)  # fmt: skip


@pytest.mark.slow
def test_saved_model_loads_without_the_project_and_detects_as_yolo_detect(tmp_path):
    yolo = small_detector()
    image = decode_image(SHAPES_JPG)
    folder = str(tmp_path / "model")
    differences = export(yolo, folder, SETTINGS, check_images=[image])
    assert differences["num_detections"] == 0 and differences["boxes"] <= 1e-3 * 96
    description = json.loads((tmp_path / "model" / "yolov2.json").read_text())
    assert description["labels"] == ["a", "b"] and description["input_size"] == [96, 96]
    assert description["outputs"] == ["boxes", "classes", "num_detections", "scores"]

    resized = cv_resize(image, 96)
    np.save(tmp_path / "images.npy", np.stack([resized, resized[::-1]]))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", LOADER, folder, str(tmp_path / "images.npy")], cwd=str(tmp_path),
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = {k: np.array(v) for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}
    assert out["boxes"].shape == (2, 20, 4)  # any batch size, padded to max_detections
    for b, picture in enumerate((resized, resized[::-1])):
        boxes, scores, classes = yolo.detect([picture], **SETTINGS)[0]
        n = int(out["num_detections"][b])
        assert n == len(scores) > 0
        np.testing.assert_allclose(out["boxes"][b, :n], boxes, atol=1e-3 * 96)  # pixels of the 96 x 96 input
        np.testing.assert_allclose(out["scores"][b, :n], scores, rtol=1e-4)
        np.testing.assert_array_equal(out["classes"][b, :n], classes)


def cv_resize(image, side):
    from augmentation import network_input

    return network_input(image, (side, side), 3)


def test_raw_export_is_the_head_output(tmp_path):
    yolo = small_detector()
    folder = str(tmp_path / "raw")
    assert export(yolo, folder, SETTINGS, raw=True)["output_0"] <= 1e-4
    assert json.loads((tmp_path / "raw" / "yolov2.json").read_text())["outputs"] == ["output_0"]


@pytest.mark.slow
def test_files_that_do_not_reproduce_the_graph_are_refused(tmp_path):
    folder = str(tmp_path / "model")
    export(small_detector(), folder, SETTINGS)
    other = small_detector()
    bias = other.model.get_layer("DetectionLayer").bias
    bias.assign(np.random.default_rng(0).normal(0, 1, bias.shape))  # other scores and boxes
    x = np.random.default_rng(0).integers(0, 256, (2, 96, 96, 3), dtype=np.uint8)
    with pytest.raises(ExportError, match="differs from the Keras graph"):
        check(folder, export_graph(other, **SETTINGS), x)


@pytest.mark.slow
def test_export_command_writes_beside_the_weights(tmp_path, demo_like_config):
    path, config = demo_like_config(tmp_path)
    yolo = YOLO.from_config(build_config(config), load_pretrained=False)
    weights = tmp_path / "runs" / "t" / "best.weights.h5"
    weights.parent.mkdir(parents=True)
    yolo.save_weights(str(weights))
    folder = cli.main(["export", "-w", str(weights), "--config", str(path)])
    assert folder == str(tmp_path / "runs" / "t" / "best_saved_model")
    assert os.path.exists(os.path.join(folder, "saved_model.pb")) and not os.path.exists(folder + ".partial")
