"""The YOLOv2 detector: a backend (feature extractor), a small conv head, the loss.

yolo = YOLO(backend="Full Yolo", input_size=416, labels=[...],
            max_box_per_image=10, anchors=[w1, h1, ...])
yolo.model            # training model: {"input_image", "true_boxes"} -> head output; compute_loss is the YOLO loss
yolo.inference_model  # input_image -> (batch, grid_h, grid_w, nb_box, 4+1+nb_class)
yolo.predict(image)   # -> [{"label", "score", "xmin", "ymin", "xmax", "ymax"}, ...]

Which backend layers train (backends/freezing.py), where pretrained weights come from and every
file format (weight_files.py), and what a config means (config.detector_args) live elsewhere.
"""

import contextlib

import keras
import numpy as np

import weight_files
from augmentation import network_input
from backends import check_stride, conv_bn_leaky, freeze_layers, get_backend, unfreeze_keeping_batchnorm
from config import AUTO_HEAD_LAYERS, DEFAULTS, detector_args, loss_args
from config_checks import as_hw, validate_model
from custom_layers import GridReshape, GroundTruthPassthrough
from decoding import DecodeDetections
from detections import to_records
from distribution import TRAINER_FIXES, predict_on_batch, replica_scale
from images import read_rgb
from loss import YoloLoss

MODEL, TRAIN, VALID = DEFAULTS["model"], DEFAULTS["train"], DEFAULTS["valid"]


class YoloTrainingModel(*TRAINER_FIXES, keras.Model):
    """Functional model whose loss reads the `true_boxes` input (keras-hub's compute_loss pattern)."""

    def __init__(self, *args, yolo_loss=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.yolo_loss = yolo_loss
        self.term_trackers = {
            name: keras.metrics.Mean(name=f"{name}_loss") for name in ("coord", "obj", "noobj", "class")
        }

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        total, terms = self.yolo_loss(y["grid"], y_pred, x["true_boxes"], y["seen"])
        for name, value in terms.items():
            self.term_trackers[name].update_state(value)
        return total * replica_scale()  # a replica's share: Keras sums the replicas' gradients

    @property
    def metrics(self):
        return super().metrics + list(self.term_trackers.values())


def choose_head_layers(head_layers, backend):
    """-> (head layers, why): a number as given; "auto" none for backends that end in darknet's detection
    layers, AUTO_HEAD_LAYERS for classification backbones."""
    if head_layers != "auto":
        return head_layers, "model.head_layers"
    if backend.ends_in_detection_layers:
        return 0, "auto: the backend ends in darknet's detection layers"
    return AUTO_HEAD_LAYERS, "auto: a classification backbone needs layers to turn its features into detections"


class YOLO:
    def __init__(self, backend, input_size, labels, max_box_per_image, anchors,
                 freeze_backend=MODEL["freeze_backend"], backend_weights=MODEL["backend_weights"], backend_options=None,
                 loss_options=None, load_pretrained=True, input_channels=MODEL["input_channels"],
                 head_layers=MODEL["head_layers"], head_filters=MODEL["head_filters"], precision=TRAIN["precision"],
                 multi_scale=None):  # fmt: skip
        """multi_scale: None, or the (smallest, largest) square sides multi-scale training feeds: the graph then
        takes any input size (detect() still resizes to input_size)."""
        validate_model({"backend": backend, "input_size": input_size, "labels": labels, "anchors": anchors,
                        "max_box_per_image": max_box_per_image, "freeze_backend": freeze_backend,
                        "input_channels": input_channels, "head_layers": head_layers, "head_filters": head_filters},
                       "YOLO()")  # fmt: skip
        # === Config ===
        self.input_h, self.input_w = as_hw(input_size)
        self.input_channels = input_channels
        self.labels, self.nb_class = list(labels), len(labels)
        self.anchors, self.nb_box = [float(a) for a in anchors], len(anchors) // 2
        self.max_box_per_image = max_box_per_image
        self.head_filters = head_filters
        self.freeze_backend, self.precision = freeze_backend, precision
        self.multi_scale = tuple(multi_scale) if multi_scale else None

        with dtype_policy(precision):
            # === Backbone ===
            self.backend = get_backend(backend, **(backend_options or {}))
            self.head_layers, self.head_choice = choose_head_layers(head_layers, self.backend)
            self.backend_model = self.backend.build(self.graph_input_shape)
            self.backend_weights, not_pretrained = weight_files.load_pretrained_backend(
                self.backend,
                self.backend_model,
                (backend_weights or "") if load_pretrained else weight_files.FROM_SCRATCH,
            )
            freeze_layers(self.backend_model, freeze_backend, keep_trainable=not_pretrained)
            self.grid_h, self.grid_w = self._check_grids()

            # === Functional Model ===
            self.loss = YoloLoss(self.anchors, **(loss_options or loss_args(DEFAULTS)))
            self.model, self.inference_model = self._build_models()
        self._detection_models = {}

    @classmethod
    def from_config(cls, config, load_pretrained=True, n_train_images=None, weights=None):
        """The detector a config.json describes; `n_train_images` turns keras-yolo2's warmup_epochs into images.
        With head_layers "auto", a detector file `weights` to be loaded decides the head when it records one."""
        args = detector_args(config, n_train_images)
        saved = weight_files.head_layers_of(weights) if weights and args["head_layers"] == "auto" else None
        if saved is not None:
            args["head_layers"] = saved
        return cls(**args, load_pretrained=load_pretrained)

    def _check_grids(self):
        """The grid at input_size, after checking the backend's stride at every multi-scale size."""
        if self.multi_scale:
            for side in range(self.multi_scale[0], self.multi_scale[1] + 1, 32):
                check_stride(self.backend_model, (side, side), f"{self.backend.name} (multi-scale training)")
        return check_stride(self.backend_model, (self.input_h, self.input_w), self.backend.name)

    def _build_models(self):
        image = keras.Input(self.graph_input_shape, name="input_image")
        true_boxes = keras.Input((1, 1, 1, self.max_box_per_image, 4), name="true_boxes")
        x = self.backend_model(image)
        # Optional detection layers trained from scratch, like darknet's conv_19/conv_20 on Darknet-19: a frozen
        # ImageNet backbone gives classification features that one linear 1x1 conv localises poorly.
        for index in range(1, self.head_layers + 1):
            x = conv_bn_leaky(x, self.head_filters, 3, index, prefix="head_")
        # Small initial weights: the head starts near "anchor prior at the cell centre, objectness 0.5". It computes
        # in float32 under mixed precision too: box offsets and logits need more than bfloat16's 3 digits.
        head = keras.layers.Conv2D(self.nb_box * (4 + 1 + self.nb_class), 1, name="DetectionLayer", dtype="float32",
                                   kernel_initializer=keras.initializers.RandomNormal(stddev=0.01))(x)  # fmt: skip
        output = GridReshape(self.nb_box, name="reshape", dtype="float32")(head)
        # keras-yolo2's "hack": true_boxes become a model input the loss can read; inference does without it.
        training_output = GroundTruthPassthrough(name="true_boxes_hack", dtype="float32")([output, true_boxes])
        model = YoloTrainingModel(inputs={"input_image": image, "true_boxes": true_boxes}, outputs=training_output,
                                  yolo_loss=self.loss, name="yolov2")  # fmt: skip
        return model, keras.Model(image, output, name="yolov2_inference")

    def parameter_count(self, trainable_only=False):
        variables = self.model.trainable_variables if trainable_only else self.model.weights
        return sum(int(keras.ops.size(v)) for v in variables)

    def unfreeze_backend(self):
        """Makes the backend's layers trainable, except its frozen BatchNorm layers (unfreeze_keeping_batchnorm);
        recompile afterwards. -> how many BatchNorm layers stay frozen."""
        self.freeze_backend = False
        return unfreeze_keeping_batchnorm(self.backend_model)

    def head(self):
        """The layers after the backend that hold weights: head_layers conv-BN pairs, then DetectionLayer."""
        names = [f"head_{kind}_{i}" for i in range(1, self.head_layers + 1) for kind in ("conv", "norm")]
        return [self.model.get_layer(name) for name in names + ["DetectionLayer"]]

    # === Weights (formats in weight_files.py) ===

    def load_weights(self, path):
        """A whole detector's weights: this project's .weights.h5, converted darknet detectors, keras-yolo2
        checkpoints (e.g. full_yolo_raccoon.h5). A file of another detector is an error naming the difference."""
        weight_files.load_detector(self, path)

    def save_weights(self, path):
        """Whole-detector weights (.weights.h5) that record backend, input size, labels and anchors."""
        weight_files.save_detector(self, path)

    def save_head(self, path):
        """Only the head, with the detector's description; `YOLO.from_parts` joins it to a backend."""
        weight_files.save_head(self, path)

    @classmethod
    def from_parts(cls, backend_weights, head_weights, input_size=None, max_box_per_image=MODEL["max_box_per_image"]):
        """A detector assembled from a backend file and a head file (save_head) without training, like
        MATLAB's assembleNetwork. Backend, labels, anchors and head come from the head file."""
        meta, arrays = weight_files.read_head(head_weights)
        weight_files.open_h5(backend_weights, "backend weights file").close()  # missing / unreadable: say so now
        yolo = cls(meta["backend"], input_size or meta["input_size"], meta["labels"], max_box_per_image,
                   meta["anchors"], backend_options=meta["backend_options"], backend_weights=backend_weights,
                   input_channels=meta.get("input_channels", 3), head_layers=meta.get("head_layers", 0),
                   head_filters=meta.get("head_filters", 256))  # fmt: skip
        weight_files.set_head(yolo, arrays, head_weights)
        return yolo

    # === Inference ===

    def detection_model(self, score_threshold=VALID["score_threshold"], nms_threshold=VALID["nms_threshold"],
                        max_detections=VALID["max_detections"]):  # fmt: skip
        """input_image -> {"boxes" (corners 0..1 of the input), "scores", "classes", "num_detections"}: the
        inference model with decoding and NMS in the graph (decoding.py); built once per setting."""
        key = (float(score_threshold), float(nms_threshold), int(max_detections))
        if key not in self._detection_models:
            detections = DecodeDetections(self.anchors, *key, name="detections")(self.inference_model.output)
            self._detection_models[key] = keras.Model(self.inference_model.input, detections, name="yolov2_detector")
        return self._detection_models[key]

    def detect(self, images, score_threshold=VALID["score_threshold"], nms_threshold=VALID["nms_threshold"],
               max_detections=VALID["max_detections"]):  # fmt: skip
        """RGB uint8 images of any sizes -> per image (boxes as continuous pixel corners of that image,
        scores, class ids), one forward pass for all of them."""
        if not len(images):
            return []
        batch = np.stack([network_input(image, (self.input_h, self.input_w), self.input_channels) for image in images])
        found = predict_on_batch(self.detection_model(score_threshold, nms_threshold, max_detections), batch)
        results = []
        for b, image in enumerate(images):
            n, (h, w) = int(found["num_detections"][b]), image.shape[:2]
            size = np.array([w, h, w, h], np.float32)
            results.append(
                (np.clip(found["boxes"][b, :n] * size, 0, size), found["scores"][b, :n], found["classes"][b, :n])
            )
        return results

    def predict(self, image, score_threshold=VALID["score_threshold"], nms_threshold=VALID["nms_threshold"]):
        """Detections in one image: an RGB array (H, W, 3) (gray (H, W) and RGBA are converted) or an
        image file path; a list of them gives a list of results.

        Each detection is {"label", "score", "xmin", "ymin", "xmax", "ymax"} in pixels of that image,
        VOC convention (1-based, inclusive, like the annotation XML), best score first.
        """
        images = image if isinstance(image, list | tuple) else [image]
        results = self.detect([read_rgb(im) for im in images], score_threshold, nms_threshold)
        records = [to_records(result, self.labels) for result in results]
        return records if isinstance(image, list | tuple) else records[0]

    @property
    def input_shape(self):
        return self.input_h, self.input_w, self.input_channels

    @property
    def graph_input_shape(self):
        """input_shape, or any height and width under multi-scale training."""
        return (None, None, self.input_channels) if self.multi_scale else self.input_shape

    def summary(self, **kwargs):
        self.model.summary(**kwargs)


@contextlib.contextmanager
def dtype_policy(name):
    """Layers built inside compute as `name` says ("mixed_bfloat16": bfloat16 maths, float32 weights); the
    global policy is restored afterwards, so one detector's precision never leaks into another."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
