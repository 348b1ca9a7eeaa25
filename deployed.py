"""Exported detectors run as deployed: a SavedModel folder, a .tflite or a .onnx file (export.py writes them),
each with the JSON description export.py puts beside it. No Keras model is built: each file runs in its own
runtime (tf.saved_model, the LiteRT interpreter, onnxruntime).

    load("runs/demo/best.onnx").detect(images)   # same results as YOLO.detect, so predict and evaluate take it

The runtimes are imported only when a file of theirs is loaded; the LiteRT and ONNX ones come from
requirements-deploy.txt.
"""

import json
import os

import numpy as np

from augmentation import network_input
from errors import UserError

DESCRIPTION = "yolov2.json"  # inside a SavedModel folder; beside a file: <file name>.json (best.onnx.json)
SUFFIXES = {".tflite": "tflite", ".onnx": "onnx"}
INSTALL = "pip install -r requirements-deploy.txt"


class DeployedModelError(UserError):
    pass


def is_exported(path):
    """A path export.py writes: a .tflite or .onnx file, or a folder holding a SavedModel."""
    return os.path.splitext(path)[1].lower() in SUFFIXES or os.path.isfile(os.path.join(path, "saved_model.pb"))


def file_format(path):
    return "saved_model" if os.path.isdir(path) else SUFFIXES[os.path.splitext(path)[1].lower()]


def description_path(path):
    return os.path.join(path, DESCRIPTION) if os.path.isdir(path) else path + ".json"


def load(path):
    """An exported file with its description -> Deployed."""
    if not os.path.exists(path):
        raise DeployedModelError(f"Exported model not found: {path}")
    described = description_path(path)
    try:
        with open(described) as f:
            description = json.load(f)
    except FileNotFoundError:
        raise DeployedModelError(
            f"{path}: its description {described} is missing (main.py export writes both)"
        ) from None
    except json.JSONDecodeError as e:
        raise DeployedModelError(f"{described} is not valid JSON: {e}") from None
    runner = {"saved_model": saved_model_runner, "tflite": tflite_runner, "onnx": onnx_runner}[file_format(path)]
    return Deployed(runner(path), description, path)


def saved_model_runner(folder):
    import tensorflow as tf

    model = tf.saved_model.load(folder)

    def run(images):
        return {name: np.asarray(value) for name, value in model.serve(images).items()}

    return run


def tflite_runner(path):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise DeployedModelError(f"{path}: running TFLite files needs the LiteRT interpreter: {INSTALL}") from None
    try:
        runner = Interpreter(model_path=path, num_threads=os.cpu_count()).get_signature_runner()
    except (ValueError, RuntimeError) as e:
        raise DeployedModelError(f"{path}: the LiteRT interpreter cannot load it: {e}") from None

    def run(images):
        return runner(images=images)

    return run


def onnx_runner(path):
    try:
        import onnxruntime
    except ImportError:
        raise DeployedModelError(f"{path}: running ONNX files needs onnxruntime: {INSTALL}") from None
    try:
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own unexported exception types
        raise DeployedModelError(f"{path}: onnxruntime cannot load it: {e}") from None
    names = [output.name for output in session.get_outputs()]
    image_input = session.get_inputs()[0].name

    def run(images):
        return dict(zip(names, session.run(names, {image_input: images})))

    return run


class Deployed:
    """An exported detector: run(uint8 batch) -> the file's outputs; detect() as YOLO.detect."""

    def __init__(self, run, description, path):
        self.run, self.description, self.path = run, description, path
        self.labels = description["labels"]
        self.input_h, self.input_w = description["input_size"]
        self.input_channels = description["channels"]
        self.format = file_format(path)
        self._noted = False

    def __call__(self, images):
        """uint8 images (batch, input_h, input_w, channels) -> {output name: array}."""
        out = self.run(np.ascontiguousarray(images, np.uint8))
        return {"output_0": next(iter(out.values()))} if self.description["raw"] else out

    def detections(self, batch, score_threshold, nms_threshold, max_detections):
        """The four padded outputs in pixels of the network input. A raw export is decoded here with the
        thresholds given; a decoding export has its own, and only a higher score threshold changes its output."""
        out = self(batch)
        if self.description["raw"]:
            from keras import ops

            from decoding import DecodeDetections

            decode = DecodeDetections(self.description["anchors"], score_threshold, nms_threshold, max_detections,
                                      input_hw=(self.input_h, self.input_w))  # fmt: skip
            return {k: ops.convert_to_numpy(v) for k, v in decode(out["output_0"]).items()}
        self._note_fixed_settings(score_threshold, nms_threshold, max_detections)
        keep = (out["scores"] >= score_threshold) & (np.arange(out["scores"].shape[1]) < max_detections)
        keep &= np.arange(out["scores"].shape[1]) < out["num_detections"][:, None]
        return {**out, "num_detections": keep.sum(axis=1)}  # kept rows are the first ones: scores sorted

    def _note_fixed_settings(self, score_threshold, nms_threshold, max_detections):
        d = self.description
        if self._noted or (score_threshold >= d["score_threshold"] and nms_threshold == d["nms_threshold"]
                           and max_detections <= d["max_detections"]):  # fmt: skip
            return
        self._noted = True
        print(f"Note: {self.path} was exported with score_threshold {d['score_threshold']}, nms_threshold "
              f"{d['nms_threshold']}, max_detections {d['max_detections']}; its detections follow those, not "
              f"{score_threshold}, {nms_threshold}, {max_detections} (export with --score_threshold, --nms_threshold to change them).")  # fmt: skip

    def detect(self, images, score_threshold, nms_threshold, max_detections):
        """RGB uint8 images of any sizes -> per image (boxes as continuous pixel corners of that image,
        scores, class ids), as YOLO.detect."""
        if not len(images):
            return []
        batch = np.stack([network_input(image, (self.input_h, self.input_w), self.input_channels) for image in images])
        found = self.detections(batch, score_threshold, nms_threshold, max_detections)
        results = []
        for b, image in enumerate(images):
            n, (h, w) = int(found["num_detections"][b]), image.shape[:2]
            size = np.array([w, h, w, h], np.float32)
            scale = size / np.array([self.input_w, self.input_h] * 2, np.float32)
            boxes = np.clip(found["boxes"][b, :n] * scale, 0, size)
            results.append((boxes, found["scores"][b, :n], found["classes"][b, :n].astype(np.int64)))
        return results
