"""main.py export on a small trained detector: every format (SavedModel, ONNX, TFLite float32 / float16 /
dynamic / int8) run in its own runtime detects as the Keras graph (float) or keeps its mAP (reduced precision);
the files load without this project, predict and evaluate take them, and broken ones are refused."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import main as cli
from deployed import DeployedModelError, load
from evaluate import evaluate_detections
from export import Exporter, ExportError, agreement, check, default_path, export, export_graph
from frontend import YOLO
from images import decode_image

pytest.importorskip("onnxruntime", reason="requirements-deploy.txt")
# the session's overfit detector (conftest.py), exported six times by the module fixture; under xdist these tests
# share a worker with test_train.py's overfitting check, so the detector is trained once
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("overfit_detector")]

LABELS = ["ellipse", "rectangle", "triangle"]
FLOOR = {"score_threshold": 0.005, "nms_threshold": 0.45, "max_detections": 50}  # many boxes: a hard comparison
VARIANTS = {"saved_model": ("saved_model", "float32"), "onnx": ("onnx", "float32"),
            "tflite": ("tflite", "float32"), "float16": ("tflite", "float16"),
            "dynamic": ("tflite", "dynamic"), "int8": ("tflite", "int8")}  # fmt: skip
LOADER = r"""
import json, sys
import numpy as np
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
out = model.serve(np.load(sys.argv[2]))
print(json.dumps({k: np.asarray(v).tolist() for k, v in out.items()}))
"""


@pytest.fixture(scope="module")
def trained(overfit_detector):
    """The session's overfit detector (conftest.py), its config with the AP floor's detection settings."""
    yolo, instances, folder = overfit_detector
    config = json.loads((folder / "config.json").read_text())
    config["valid"].update(FLOOR)
    (folder / "config.json").write_text(json.dumps(config))
    return yolo, instances, folder


@pytest.fixture(scope="module")
def exported(trained):
    """Every variant written at the AP floor -> {variant: (path, the check's figures)}."""
    yolo, instances, folder = trained
    images = [decode_image(i["filename"]) for i in instances]
    written = {}
    with Exporter(yolo, FLOOR) as exporter:  # export() in all but the SavedModel's trace, done once here
        for variant, (format, quantization) in VARIANTS.items():
            path = default_path(str(folder / "best.weights.h5"), format, quantization)
            written[variant] = path, exporter.write(path, format, quantization, images[:4], images)
    return written


def detections_of(detector, instances):
    return detector.detect([decode_image(i["filename"]) for i in instances], **FLOOR)


def test_default_paths_sit_beside_the_weights():
    assert default_path("runs/d/best.weights.h5", "saved_model") == "runs/d/best_saved_model"
    assert default_path("runs/d/best.weights.h5", "onnx") == "runs/d/best.onnx"
    assert default_path("runs/d/best.weights.h5", "tflite", "int8") == "runs/d/best_int8.tflite"


@pytest.mark.parametrize("variant", ["saved_model", "onnx", "tflite"])
def test_float_exports_detect_as_the_keras_graph(trained, exported, variant):
    yolo, instances, _ = trained
    path, differences = exported[variant]
    assert differences["num_detections"] == 0 and differences["scores"] <= 1e-4
    deployed = load(path)
    assert deployed.labels == LABELS and deployed.format == VARIANTS[variant][0]
    for (boxes, scores, classes), (want_boxes, want_scores, want_classes) in zip(
        detections_of(deployed, instances), detections_of(yolo, instances)
    ):
        assert len(scores) == len(want_scores) > 0
        np.testing.assert_allclose(boxes, want_boxes, atol=1e-3 * 128)
        np.testing.assert_allclose(scores, want_scores, rtol=1e-4, atol=1e-7)
        np.testing.assert_array_equal(classes, want_classes)


def test_reduced_precision_tflite_keeps_the_map(trained, exported):
    """int8 within 0.02 of float (the issue's bar); float16 and dynamic-range closer still."""
    yolo, instances, _ = trained

    def map_of(detector):
        return evaluate_detections(instances, detections_of(detector, instances), LABELS, "voc", 0.3)["map"]

    float_map = map_of(yolo)
    assert float_map > 0.8  # a detector that finds the boxes, or the comparison says nothing
    maps = {variant: map_of(load(exported[variant][0])) for variant in ("float16", "dynamic", "int8")}
    print(
        f"VOC mAP@0.5 on the training images: float {float_map:.4f}, "
        + ", ".join(f"{k} {v:.4f}" for k, v in maps.items())
    )
    assert abs(maps["int8"] - float_map) <= 0.02
    assert abs(maps["float16"] - float_map) <= 0.005 and abs(maps["dynamic"] - float_map) <= 0.01
    for variant in ("float16", "dynamic", "int8"):
        assert exported[variant][1]["found"] == 1.0  # the check found every confident detection


def test_tflite_files_use_builtin_ops_and_int8_quantizes_the_network_only(exported):
    from ai_edge_litert.interpreter import Interpreter

    def ops_of(variant):
        interpreter = Interpreter(model_path=exported[variant][0])
        tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
        return [(op["op_name"], tensors[op["outputs"][0]]["dtype"]) for op in interpreter._get_ops_details()]

    for variant in ("tflite", "float16", "dynamic", "int8"):
        assert not [name for name, _ in ops_of(variant) if "FLEX" in name.upper() or name == "CUSTOM"]
    int8 = ops_of("int8")
    convolutions = [dtype for name, dtype in int8 if name in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    assert convolutions and all(dtype == np.int8 for dtype in convolutions)
    assert [dtype for name, dtype in int8 if name == "LOGISTIC"] == [np.float32] * 3  # decoding stays float
    assert os.path.getsize(exported["int8"][0]) < 0.5 * os.path.getsize(exported["tflite"][0])


def test_onnx_states_its_opset(exported):
    import onnx

    path = exported["onnx"][0]
    opsets = {o.domain: o.version for o in onnx.load(path).opset_import}
    description = json.loads(open(path + ".json").read())
    assert opsets[""] == description["opset"] == 17
    assert description["outputs"] == ["boxes", "classes", "num_detections", "scores"]


def test_saved_model_loads_without_the_project(trained, exported, tmp_path):
    yolo, instances, _ = trained
    image = decode_image(instances[0]["filename"])
    batch = np.stack([image, image[::-1]])  # already 128 x 128: the network input itself
    np.save(tmp_path / "images.npy", batch)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", LOADER, exported["saved_model"][0], str(tmp_path / "images.npy")],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = {k: np.array(v) for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}
    assert out["boxes"].shape == (2, 50, 4)  # any batch size, padded to max_detections
    for b, picture in enumerate(batch):
        boxes, scores, classes = yolo.detect([picture], **FLOOR)[0]
        n = int(out["num_detections"][b])
        assert n == len(scores) > 0
        np.testing.assert_allclose(out["boxes"][b, :n], boxes, atol=1e-3 * 128)  # pixels of the input
        np.testing.assert_allclose(out["scores"][b, :n], scores, rtol=1e-4)
        np.testing.assert_array_equal(out["classes"][b, :n], classes)


def test_predict_and_evaluate_take_every_format(trained, exported, tmp_path):
    """predict -w FILE writes the records predict -w weights writes (float formats; int8: as many images drawn),
    and evaluate -w FILE the mAP of evaluate -w weights."""
    _, _, folder = trained
    config, images = str(folder / "config.json"), str(folder / "few" / "images")

    def predict(weights, name):
        return cli.main(["predict", "-w", weights, "-c", config, "-i", images, "--output", str(tmp_path / name),
                         "--json"])  # fmt: skip

    def evaluate(weights, name):
        return cli.main(["evaluate", "-w", weights, "-c", config, "--output", str(tmp_path / name)])["map"]

    weights = str(folder / "best.weights.h5")
    want, want_map = predict(weights, "keras"), evaluate(weights, "keras_map")
    for variant in ("saved_model", "onnx", "tflite", "int8"):
        got = predict(exported[variant][0], variant)
        assert sorted(os.listdir(tmp_path / variant)) == sorted(os.listdir(tmp_path / "keras"))
        if variant != "int8":
            assert [(r["image"], r["label"]) for r in got] == [(r["image"], r["label"]) for r in want]
            np.testing.assert_allclose([r["xmin"] for r in got], [r["xmin"] for r in want], atol=0.2)
            assert evaluate(exported[variant][0], variant + "_map") == pytest.approx(want_map, abs=1e-4)


def test_raw_export_is_the_head_output_and_decodes_as_the_graph(trained, tmp_path):
    yolo, instances, _ = trained
    path = str(tmp_path / "raw.onnx")
    assert export(yolo, path, FLOOR, "onnx", raw=True)["output_0"] <= 1e-4
    deployed = load(path)
    assert deployed.description["outputs"] == ["output_0"]
    for (_, scores, classes), (_, want_scores, want_classes) in zip(
        detections_of(deployed, instances[:2]), detections_of(yolo, instances[:2])
    ):
        np.testing.assert_allclose(scores, want_scores, rtol=1e-4, atol=1e-7)
        np.testing.assert_array_equal(classes, want_classes)


def test_files_that_do_not_reproduce_the_graph_are_refused(trained, exported):
    yolo, _, _ = trained
    other = YOLO("MobileNet", 128, LABELS, 6, yolo.anchors, backend_options={"alpha": 0.25}, load_pretrained=False)
    x = np.random.default_rng(0).integers(0, 256, (2, 128, 128, 3), dtype=np.uint8)
    with pytest.raises(ExportError, match="differs from the Keras graph"):
        check(exported["onnx"][0], export_graph(other, **FLOOR), x)


def test_agreement_of_reduced_precision_detections():
    """Hand-made outputs: two confident detections, one found (same class, IoU 0.81), one of another class."""
    want = {
        "boxes": np.array([[[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 5, 5]]], np.float32),
        "scores": np.array([[0.9, 0.8, 0.2]]),
        "classes": np.array([[0, 1, 2]]),
        "num_detections": np.array([3]),
    }
    got = {"boxes": np.array([[[0, 0, 9, 9], [20, 20, 30, 30]]], np.float32), "scores": np.array([[0.85, 0.7]]),
           "classes": np.array([[0, 2]]), "num_detections": np.array([2])}  # fmt: skip
    figures = agreement(got, want, side=100)
    assert figures == {"found": 0.5, "confident": 2, "score": pytest.approx(0.05), "box": pytest.approx(0.01)}


def test_user_errors_name_the_file(trained, exported, tmp_path, capsys):
    _, _, folder = trained
    orphan = tmp_path / "orphan.onnx"
    orphan.write_bytes(open(exported["onnx"][0], "rb").read())
    with pytest.raises(DeployedModelError, match="orphan.onnx.json is missing"):
        load(str(orphan))
    (tmp_path / "orphan.onnx.json").write_text(open(exported["onnx"][0] + ".json").read())
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    (tmp_path / "broken.onnx.json").write_text((tmp_path / "orphan.onnx.json").read_text())
    with pytest.raises(DeployedModelError, match="broken.onnx: onnxruntime cannot load it"):
        load(str(tmp_path / "broken.onnx"))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["export", "-w", exported["onnx"][0], "-c", str(folder / "config.json")])
    assert exit_info.value.code == 2 and "is an exported model already" in capsys.readouterr().err
    with pytest.raises(ExportError, match="int8 needs calibration images"):
        export(trained[0], str(tmp_path / "x.tflite"), FLOOR, "tflite", "int8")
    with pytest.raises(ExportError, match="float16 is a TFLite setting"):
        export(trained[0], str(tmp_path / "x.onnx"), FLOOR, "onnx", "float16")


def test_export_command_writes_beside_the_weights_and_replaces_atomically(trained, tmp_path, capsys):
    _, _, folder = trained
    weights = tmp_path / "best.weights.h5"
    weights.write_bytes((folder / "best.weights.h5").read_bytes())
    args = ["export", "-w", str(weights), "-c", str(folder / "config.json"), "--format", "tflite", "--int8",
            "--input_size", "160"]  # fmt: skip
    path = cli.main(args)
    assert path == str(tmp_path / "best_int8.tflite") and os.path.exists(tmp_path / "best_int8.tflite.json")
    assert "calibrated on 8 images" in capsys.readouterr().out  # the config's training images
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".partial")]
    deployed = load(path)
    assert deployed.description["quantization"] == "int8" and deployed.description["input_size"] == [160, 160]
    assert deployed(np.zeros((3, 160, 160, 3), np.uint8))["boxes"].shape == (3, 50, 4)


def test_export_bench_measures_each_format_next_to_keras(trained, tmp_path):
    from bench_export import format_export_bench, run_export_bench
    from config import load_config

    yolo, _, folder = trained
    config = load_config(str(folder / "config.json"))
    variants = (("onnx", "float32"), ("tflite", "int8"))
    result = run_export_bench(yolo, config, str(folder / "best.weights.h5"), str(tmp_path), repeats=2, batch=8,
                              variants=variants)  # fmt: skip
    keras_row, onnx_row, int8_row = result["rows"]
    assert [r["format"] for r in result["rows"]] == ["keras", "onnx", "tflite"] and result["batch"] == 8
    assert onnx_row["map"] == pytest.approx(keras_row["map"], abs=1e-4) and keras_row["map"] > 0.8
    assert abs(int8_row["map"] - keras_row["map"]) <= 0.02
    assert onnx_row["size_mb"] == pytest.approx(os.path.getsize(tmp_path / "best.onnx") / 1e6)
    assert all(r["batch1_img_s"] > 0 and r["batch_img_s"] > 0 for r in result["rows"])
    assert onnx_row["check"]["num_detections"] == 0 and int8_row["check"]["found"] == 1.0
    table = format_export_bench(result)
    assert "tflite int8" in table and f"{int8_row['map'] - keras_row['map']:+9.4f}" in table


JAX_EXPORT = r"""
import json, sys
from export import ExportError, export
from frontend import YOLO
yolo = YOLO("MobileNet", 96, ["a"], 4, [1.0, 1.0], backend_options={"alpha": 0.25}, load_pretrained=False)
try:
    export(yolo, sys.argv[1], {"score_threshold": 0.3, "nms_threshold": 0.45, "max_detections": 10}, "onnx")
    print(json.dumps({"error": None}))
except ExportError as e:
    print(json.dumps({"error": str(e)}))
"""


def test_export_under_jax_says_to_use_tensorflow(tmp_path):
    from conftest import run_under_jax

    result = run_under_jax(JAX_EXPORT, tmp_path / "m.onnx")
    assert "KERAS_BACKEND=tensorflow" in result["error"] and not (tmp_path / "m.onnx").exists()


def test_raw_int8_export_is_checked_against_the_head_output(trained, tmp_path):
    yolo, instances, _ = trained
    images = [decode_image(i["filename"]) for i in instances]
    figures = export(yolo, str(tmp_path / "raw_int8.tflite"), FLOOR, "tflite", "int8", raw=True,
                     check_images=images[:4], calibration_images=images)  # fmt: skip
    assert 0 < figures["relative_rms"] <= 0.2 and figures["rms"] > 0
    assert load(str(tmp_path / "raw_int8.tflite")).description["raw"] is True
