"""Deployable detectors (TensorFlow only): the detector with decoding and NMS inside the graph, written as a
TensorFlow SavedModel that takes RGB uint8 images (any batch size) at the training input size and returns
boxes in pixels of that input, with a JSON description beside it; checked right after it is written by
loading the files and running them against the Keras graph.

    tf.saved_model.load(folder).serve(images) -> {"boxes", "scores", "classes", "num_detections"}
    (with raw=True: {"output_0": the head output (batch, grid_h, grid_w, nb_box, 5 + classes)})

No `true_boxes` input and no project code are needed to load it.
"""

import json
import os
import shutil

import keras
import numpy as np

from augmentation import network_input
from decoding import DecodeDetections
from errors import UserError
from weight_files import atomic_write

FORMATS = ("saved_model",)
DESCRIPTION = "yolov2.json"
# largest differences accepted between the written model and the Keras graph
SCORE_TOLERANCE = 1e-4
BOX_TOLERANCE = 1e-3  # of the input side


class ExportError(UserError):
    pass


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


def describe(yolo, model, score_threshold, nms_threshold, max_detections, raw):
    """What a runtime needs besides the file: the labels, the input, the anchors, the settings, the outputs."""
    return {
        "format": "saved_model", "signature": "serve", "input": "images", "input_dtype": "uint8",
        "input_size": [yolo.input_h, yolo.input_w], "channels": yolo.input_channels, "labels": yolo.labels,
        "anchors": yolo.anchors, "backend": yolo.backend.name, "raw": raw,
        "score_threshold": score_threshold, "nms_threshold": nms_threshold, "max_detections": max_detections,
        "outputs": ["output_0"] if raw else sorted(model.output),
        "boxes": None if raw else "x0, y0, x1, y1 in pixels of the input image; rows past num_detections are zero",
    }  # fmt: skip


def export(yolo, folder, detection_args, raw=False, check_images=()):
    """Writes the SavedModel and its description into `folder` (replaced as a whole only once both are
    written), then checks it on `check_images` (RGB arrays; random pixels when none). -> largest differences."""
    model = export_graph(yolo, **detection_args, raw=raw)
    partial = folder.rstrip("/\\") + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    model.export(partial, format="tf_saved_model", verbose=False)
    with atomic_write(os.path.join(partial, DESCRIPTION)) as tmp, open(tmp, "w") as f:
        json.dump(describe(yolo, model, **detection_args, raw=raw), f, indent=2)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(partial, folder)
    return check(folder, model, sample_inputs(yolo, check_images))


def sample_inputs(yolo, images):
    if not len(images):
        return np.random.default_rng(0).integers(0, 256, (4, *yolo.input_shape), dtype=np.uint8)
    return np.stack([network_input(image, (yolo.input_h, yolo.input_w), yolo.input_channels) for image in images])


def check(folder, model, x):
    """Runs the written SavedModel and the Keras graph on `x`; a difference beyond the tolerances is an error."""
    import tensorflow as tf

    loaded = tf.saved_model.load(folder)  # kept: its variables go with it
    got = loaded.serve(x)
    want = model.predict_on_batch(x)
    if not isinstance(want, dict):
        got, want = {"output_0": got}, {"output_0": want}
    got = {k: np.asarray(v) for k, v in got.items()}
    differences = {k: float(np.abs(got[k].astype(np.float64) - want[k]).max()) for k in want}
    side = max(model.input.shape[1:3])
    wrong = [k for k, limit in (("boxes", BOX_TOLERANCE * side), ("scores", SCORE_TOLERANCE), ("classes", 0),
                                ("num_detections", 0), ("output_0", SCORE_TOLERANCE)) if differences.get(k, 0) > limit]  # fmt: skip
    if wrong:
        raise ExportError(f"{folder}: the exported model differs from the Keras graph ({differences}); not usable")
    return differences
