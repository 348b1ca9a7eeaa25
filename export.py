"""Deployable detectors (TensorFlow only): the detector with decoding and NMS inside the graph, written as a
TensorFlow SavedModel, a TFLite file (float32, float16, dynamic-range or full-integer int8) or an ONNX file.
Each takes RGB uint8 images (any batch size) at the export's input size and returns boxes in pixels of that
input, with a JSON description beside it (deployed.py reads both), and is checked right after it is written by
running the file in its own runtime against the Keras graph.

    outputs {"boxes" (batch, max_detections, 4) x0 y0 x1 y1, "scores", "classes", "num_detections"}
    (raw=True: {"output_0": the head output (batch, grid_h, grid_w, nb_box, 5 + classes)})

No `true_boxes` input, no custom objects and no project code are needed to load them. TFLite files use only
TFLite builtin ops, so the plain LiteRT interpreter runs them.
"""

import contextlib
import io
import json
import os
import shutil
import tempfile

import keras
import numpy as np

from augmentation import network_input
from config import detection_args
from datasets import load_datasets
from decoding import DecodeDetections
from deployed import description_path, load
from errors import UserError
from images import decode_image
from predict import image_files
from weight_files import atomic_write

FORMATS = ("saved_model", "tflite", "onnx")
QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")  # TFLite only
ONNX_OPSET = 17
CALIBRATION_IMAGES = 100
# largest differences accepted between a float32 file and the Keras graph (boxes: of the input side)
SCORE_TOLERANCE = 1e-4
BOX_TOLERANCE = 1e-3
# a reduced-precision file must find this share of the Keras graph's confident detections (see agreement())
AGREEMENT = {"float16": 0.98, "dynamic": 0.9, "int8": 0.8}
CONFIDENT = 0.5
# a reduced-precision raw export: the head output's RMS error, as a share of its standard deviation
RAW_RELATIVE_RMS = 0.2


class ExportError(UserError):
    pass


def run_export(yolo, config, weights, format, quantization, output, raw, calibration_folder):
    """`main.py export`: written beside the weights unless `output` says where, checked on validation images
    (random pixels when the config's data is absent), int8 calibrated on `calibration_folder` or on
    CALIBRATION_IMAGES training images. -> the path written."""
    path = output or default_path(weights, format, quantization)
    try:
        train_set, valid_set, _ = load_datasets(config)
    except UserError as e:
        train_set, valid_set, missing = [], [], e
    calibration = []
    if quantization == "int8":
        if calibration_folder:
            files = image_files(calibration_folder)
        elif train_set:
            files = [i["filename"] for i in train_set[:: max(1, len(train_set) // CALIBRATION_IMAGES)]]
        else:
            raise ExportError(f"int8 needs calibration images: --calibration FOLDER (the config's data: {missing})")
        calibration = readable(files[:CALIBRATION_IMAGES] if not calibration_folder else files)
        if not calibration:
            raise ExportError(f"int8: no readable calibration images in {calibration_folder or 'the training set'}")
    check_images = readable([i["filename"] for i in valid_set[:4]])
    figures = export(yolo, path, detection_args(config), format, quantization, raw, check_images, calibration)
    what = format + ("" if quantization == "float32" else f" {quantization}") + (", raw head output" if raw else "")
    calibrated = f", calibrated on {len(calibration)} images" if calibration else ""
    compared = "largest differences" if quantization == "float32" else "agreement"
    print(f"Wrote {path} ({what}{calibrated}) and {description_path(path)}.\nRun on {len(check_images) or 4} "
          f"{'validation' if check_images else 'random'} images against the Keras graph, {compared}: "
          + ", ".join(f"{k} {v:.3g}" for k, v in figures.items()))  # fmt: skip
    return path


def readable(paths):
    return [image for image in map(decode_image, paths) if image is not None]


def export_graph(yolo, score_threshold, nms_threshold, max_detections, raw=False):
    """uint8 images (batch, input_h, input_w, channels) -> the detections in pixels of that input, or, raw,
    the head output."""
    image = keras.Input(yolo.input_shape, dtype="uint8", name="images")
    netout = yolo.inference_model(image)
    if raw:
        return keras.Model(image, netout, name="yolov2_head")
    detections = DecodeDetections(yolo.anchors, score_threshold, nms_threshold, max_detections,
                                  input_hw=(yolo.input_h, yolo.input_w), name="detections")(netout)  # fmt: skip
    return keras.Model(image, detections, name="yolov2_detector")


def describe(yolo, model, format, quantization, score_threshold, nms_threshold, max_detections, raw):
    """What a runtime needs besides the file: the labels, the input, the anchors, the settings, the outputs."""
    return {
        "format": format, "quantization": quantization, "opset": ONNX_OPSET if format == "onnx" else None,
        "signature": "serve" if format == "saved_model" else "serving_default",
        "input": "images", "input_dtype": "uint8", "input_size": [yolo.input_h, yolo.input_w],
        "channels": yolo.input_channels, "labels": yolo.labels, "anchors": yolo.anchors,
        "backend": yolo.backend.name, "raw": raw,
        "score_threshold": score_threshold, "nms_threshold": nms_threshold, "max_detections": max_detections,
        "outputs": ["output_0"] if raw else sorted(model.output),
        "boxes": None if raw else "x0, y0, x1, y1 in pixels of the input image; rows past num_detections are zero",
    }  # fmt: skip


def default_path(weights, format, quantization="float32"):
    """runs/demo/best.weights.h5 -> runs/demo/best_saved_model, best.onnx, best.tflite, best_int8.tflite."""
    stem = os.path.splitext(weights.removesuffix(".weights.h5"))[0]
    if format == "saved_model":
        return stem + "_saved_model"
    return stem + ("" if quantization == "float32" else f"_{quantization}") + "." + format


def export(yolo, path, detection_args, format="saved_model", quantization="float32", raw=False, check_images=(),
           calibration_images=()):  # fmt: skip
    """Writes the model to `path` and its description beside it (a file or folder already there is replaced
    only once the new one is complete), then runs the written file on `check_images` (RGB arrays; random pixels
    when none) against the Keras graph. `calibration_images` (RGB arrays) calibrate int8. -> the comparison."""
    with Exporter(yolo, detection_args, raw) as exporter:
        return exporter.write(path, format, quantization, check_images, calibration_images)


class Exporter:
    """One detector's export graph, written to as many files as asked: its SavedModel is traced once and every
    TFLite file is converted from it (tracing is most of a TFLite export's time: 8 of 13 s for the demo's detector
    on 2 cores). export() writes one file; the test suite writes six from one Exporter."""

    def __init__(self, yolo, detection_args, raw=False):
        if keras.backend.backend() != "tensorflow":
            raise ExportError(f"export converts TensorFlow graphs; run it with KERAS_BACKEND=tensorflow (now: "
                              f"{keras.backend.backend()}). The files it writes run anywhere.")  # fmt: skip
        self.yolo, self.detection_args, self.raw = yolo, detection_args, raw
        self.model = export_graph(yolo, **detection_args, raw=raw)
        self.folder = tempfile.TemporaryDirectory()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.folder.cleanup()

    def saved_model(self):
        """The graph's SavedModel, traced and written on first use."""
        path = os.path.join(self.folder.name, "saved_model")
        if not os.path.exists(path):
            self.model.export(path, format="tf_saved_model", verbose=False)
        return path

    def write(self, path, format="saved_model", quantization="float32", check_images=(), calibration_images=()):
        """As export() above, with this exporter's graph."""
        if format not in FORMATS or quantization not in QUANTIZATIONS:
            raise ExportError(
                f"Unknown export {format} {quantization}: formats {FORMATS}, TFLite types {QUANTIZATIONS}"
            )
        if quantization != "float32" and format != "tflite":
            raise ExportError(f"{quantization} is a TFLite setting; {format} exports are float32")
        if quantization == "int8" and not len(calibration_images):
            raise ExportError("int8 needs calibration images (the training images, or --calibration FOLDER)")
        yolo, model = self.yolo, self.model
        partial = path.rstrip("/\\") + ".partial"
        shutil.rmtree(partial, ignore_errors=True)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        if format == "saved_model":
            shutil.copytree(self.saved_model(), partial)
        elif format == "tflite":
            calibration = network_inputs(yolo, calibration_images) if quantization == "int8" else None
            write_tflite(self.saved_model(), network_scope(model), partial, quantization, calibration)
        else:
            write_onnx(model, partial)
        description = describe(yolo, model, format, quantization, **self.detection_args, raw=self.raw)
        with atomic_write(description_path(partial) if format == "saved_model" else description_path(path)) as tmp:
            with open(tmp, "w") as f:
                json.dump(description, f, indent=2)
        if os.path.isdir(path):
            shutil.rmtree(path)
        os.replace(partial, path)
        x = network_inputs(yolo, check_images) if len(check_images) else random_inputs(yolo)
        return check(path, model, x, quantization)


def network_inputs(yolo, images):
    return np.stack([network_input(image, (yolo.input_h, yolo.input_w), yolo.input_channels) for image in images])


def random_inputs(yolo, count=4):
    return np.random.default_rng(0).integers(0, 256, (count, *yolo.input_shape), dtype=np.uint8)


def write_tflite(saved_model, scope, path, quantization, calibration):
    """Converted from the export graph's SavedModel, with builtin ops only. int8: the network (the ops named in
    `scope`) runs in int8 end to end (weights and activations, calibrated on `calibration`); decoding and NMS stay
    float, as quantizing boxes and scores before NMS cost the demo 0.17 mAP (0.92 -> 0.75) where the network alone
    costs 0.003."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization in ("float16", "dynamic"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    try:
        blob = converter.convert()
    except Exception as e:  # the converter raises ConverterError and plain exceptions alike
        raise ExportError(f"TFLite conversion failed: {str(e)[-2000:]}") from None
    if quantization == "int8":
        blob = int8_network(blob, scope, calibration)
    with open(path, "wb") as f:
        f.write(blob)


def network_scope(model):
    """The name that the network's tensors (and not the decoding's) carry in the converted file."""
    return next(layer.name for layer in model.layers if isinstance(layer, keras.Model))


def int8_network(float_tflite, scope, calibration):
    """ai-edge-quantizer's static int8 (channel-wise weights, min-max activations) on the ops named in `scope`."""
    try:
        from ai_edge_quantizer import qtyping, quantizer
    except ImportError:
        raise ExportError("int8 export needs ai-edge-quantizer: pip install -r requirements-deploy.txt") from None
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "float32.tflite")
        with open(path, "wb") as f:
            f.write(float_tflite)
        q = quantizer.Quantizer(path)
        q.add_static_config(regex=f".*{scope}.*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                            activation_num_bits=8, weight_num_bits=8)  # fmt: skip
        ranges = q.calibrate({"serving_default": [{"images": image[None]} for image in calibration]})
        with contextlib.redirect_stdout(io.StringIO()):  # its size report; run_export prints its own
            return q.quantize(ranges).quantized_model


def write_onnx(model, path):
    """tf2onnx through Keras' exporter, opset ONNX_OPSET."""
    try:
        import tf2onnx  # noqa: F401  (Keras imports it lazily; an absent one should say how to install it)
    except ImportError:
        raise ExportError("ONNX export needs tf2onnx: pip install -r requirements-deploy.txt") from None
    model.predict_on_batch(np.zeros((1, *model.input.shape[1:]), np.uint8))  # Keras exports called models only
    model.export(path, format="onnx", opset_version=ONNX_OPSET, verbose=False)


def check(path, model, x, quantization="float32"):
    """Runs the written file in its runtime and the Keras graph on `x`. float32: the largest differences of
    each output, beyond the tolerances an error. Reduced precision: the agreement of the detections, too
    little an error. -> the figures."""
    got = load(path)(x)
    want = model.predict_on_batch(x)
    if not isinstance(want, dict):
        got, want = {"output_0": got["output_0"]}, {"output_0": want}
    side = max(model.input.shape[1:3])
    if (
        quantization != "float32" and "output_0" in want
    ):  # a reduced-precision head output: its error against its spread
        error = np.asarray(got["output_0"], np.float64) - want["output_0"]
        figures = {"rms": float(np.sqrt(np.mean(error**2))), "relative_rms": float(np.sqrt(np.mean(error**2))
                   / max(float(np.std(want["output_0"])), 1e-12))}  # fmt: skip
        if figures["relative_rms"] > RAW_RELATIVE_RMS:
            raise ExportError(f"{path}: the {quantization} head output is off by {figures['relative_rms']:.0%} of its "
                              f"spread (at most {RAW_RELATIVE_RMS:.0%} expected); not usable")  # fmt: skip
        return figures
    if quantization != "float32":
        figures = agreement(got, want, side)
        if figures["found"] < AGREEMENT[quantization]:
            raise ExportError(f"{path}: the {quantization} model finds {figures['found']:.0%} of the Keras graph's "
                              f"detections scoring {CONFIDENT}+ (at least {AGREEMENT[quantization]:.0%} expected; "
                              f"{figures}); not usable")  # fmt: skip
        return figures
    differences = {k: float(np.abs(np.asarray(got[k], np.float64) - want[k]).max()) for k in want}
    limits = {"boxes": BOX_TOLERANCE * side, "scores": SCORE_TOLERANCE, "classes": 0, "num_detections": 0,
              "output_0": SCORE_TOLERANCE}  # fmt: skip
    if any(differences[k] > limits[k] for k in differences):
        raise ExportError(f"{path}: the exported model differs from the Keras graph ({differences}); not usable")
    return differences


def agreement(got, want, side):
    """Detections of a reduced-precision file against the Keras graph's: each of the graph's detections scoring
    CONFIDENT or more is found when the file has one of the same class overlapping it by IoU 0.5 or more.
    -> {"found": share found (1 when there are none), "confident": how many, "score": largest score difference
    and "box": largest corner difference (of the input side) over the pairs found}."""
    found = total = 0
    score = box = 0.0
    for b in range(len(want["num_detections"])):
        mine = slice(0, int(got["num_detections"][b]))
        for k in range(int(want["num_detections"][b])):
            if want["scores"][b, k] < CONFIDENT:
                continue
            total += 1
            same = got["classes"][b, mine] == want["classes"][b, k]
            ious = box_ious(want["boxes"][b, k], got["boxes"][b, mine]) * same
            if ious.size and ious.max() >= 0.5:
                found += 1
                j = int(ious.argmax())
                score = max(score, abs(float(got["scores"][b, j] - want["scores"][b, k])))
                box = max(box, float(np.abs(got["boxes"][b, j] - want["boxes"][b, k]).max()) / side)
    return {"found": found / total if total else 1.0, "confident": total, "score": score, "box": box}


def box_ious(box, boxes):
    lo, hi = np.maximum(box[:2], boxes[:, :2]), np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
    area = np.prod(box[2:] - box[:2])
    return inter / np.maximum(area + np.prod(boxes[:, 2:] - boxes[:, :2], axis=1) - inter, 1e-12)
