"""The YOLOv2 detector: a backend (feature extractor), a 1x1 conv head, the loss.

yolo = YOLO(backend="Full Yolo", input_size=416, labels=[...],
            max_box_per_image=10, anchors=[w1, h1, ...])
yolo.model            # training model: [input_image, true_boxes] -> head output
yolo.inference_model  # input_image -> (batch, grid_h, grid_w, nb_box, 4+1+nb_class)
yolo.predict(image)   # -> [{"label", "score", "xmin", "ymin", "xmax", "ymax"}, ...]
"""

import fnmatch
import json
import os
import re
import warnings

import h5py
import keras
import numpy as np

from backends import (
    DETECTOR_VS_BACKEND,
    assign_by_name,
    conv_bn_leaky,
    get_backend,
    h5_layer_name,
    is_keras2_file,
    layers_with_weights,
    load_backend_weights,
    read_keras2_weights,
)
from config import as_hw
from custom_layers import GroundTruthPassthrough
from loss import YoloLoss
from preprocessing import decode_image, network_input, to_rgb_uint8
from utils import detect


class YoloTrainingModel(keras.Model):
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
        return total

    @property
    def metrics(self):
        return super().metrics + list(self.term_trackers.values())


# model.backend_weights value that trains the backend from its random initialisation, ignoring weights/
FROM_SCRATCH = "none"


class YOLO:
    def __init__(
        self,
        backend,
        input_size,
        labels,
        max_box_per_image,
        anchors,
        freeze_backend=True,
        backend_weights=None,
        backend_options=None,
        loss_options=None,
        load_pretrained=True,
        input_channels=3,
        head_layers=0,
        head_filters=256,
    ):
        self.input_h, self.input_w = as_hw(input_size)
        if input_channels not in (1, 3):
            raise ValueError(f"input_channels must be 3 (RGB) or 1 (gray), got {input_channels!r}")
        self.input_channels = input_channels
        self.head_layers, self.head_filters = int(head_layers), int(head_filters)
        self.labels = list(labels)
        self.nb_class = len(self.labels)
        if len(anchors) % 2 or not anchors:
            raise ValueError(f"anchors must be pairs of width, height in grid units, got {len(anchors)} numbers")
        self.anchors = [float(a) for a in anchors]
        self.nb_box = len(self.anchors) // 2
        self.max_box_per_image = int(max_box_per_image)
        self.freeze_backend = freeze_backend

        self.backend_options = dict(backend_options or {})
        self.backend = get_backend(backend, **self.backend_options)
        self.backend_model = self.backend.build(self.input_shape)
        self.backend_weights, self.not_pretrained = None, []
        from_scratch = isinstance(backend_weights, str) and backend_weights.lower() == FROM_SCRATCH
        if self.backend.weights_built_in:
            self.backend_weights = self.backend.weights_built_in
        elif load_pretrained and not from_scratch:
            self.backend_weights = self._load_backend_weights(backend_weights)
        if freeze_backend:
            self._freeze_backend()
        self.grid_h, self.grid_w = self.backend_model.output.shape[1:3]

        self.loss = YoloLoss(self.anchors, **(loss_options or {}))
        self.model, self.inference_model = self._build_models()

    @classmethod
    def from_config(cls, config, load_pretrained=True, warmup_images=12800):
        """The detector a config.json describes (its "model" section and the loss weights in "train")."""
        model_cfg, train_cfg = config["model"], config["train"]
        return cls(
            backend=model_cfg["backend"],
            input_size=model_cfg["input_size"],
            labels=model_cfg["labels"],
            max_box_per_image=model_cfg["max_box_per_image"],
            anchors=model_cfg["anchors"],
            freeze_backend=model_cfg["freeze_backend"],
            backend_weights=model_cfg["backend_weights"] or None,
            backend_options=model_cfg["backend_options"],
            loss_options={
                "object_scale": train_cfg["object_scale"],
                "no_object_scale": train_cfg["no_object_scale"],
                "coord_scale": train_cfg["coord_scale"],
                "class_scale": train_cfg["class_scale"],
                "ignore_thresh": train_cfg["ignore_thresh"],
                "warmup_images": warmup_images,
            },
            load_pretrained=load_pretrained,
            input_channels=model_cfg["input_channels"],
            head_layers=model_cfg["head_layers"],
            head_filters=model_cfg["head_filters"],
        )

    def _freeze_backend(self):
        """freeze_backend: True (all), a number N (the first N layers with weights), or names / fnmatch
        patterns (["conv_1", "conv_2*"]). A frozen layer keeps its weights and BatchNormalization runs in
        inference mode. Layers the weights file did not cover (a darknet prefix) stay trainable: frozen
        random layers could not learn."""
        spec = self.freeze_backend
        if spec is True and not self.not_pretrained:
            self.backend_model.trainable = False
            return
        layers = layers_with_weights(self.backend_model)
        names = [layer.name for layer in layers]
        if spec is True:
            frozen = set(names) - set(self.not_pretrained)
        elif isinstance(spec, int):
            frozen = set(names[:spec])
        else:
            frozen = set()
            for pattern in spec:
                matched = fnmatch.filter(names, pattern)
                if not matched:
                    raise ValueError(
                        f"freeze_backend: {pattern!r} matches no layer of the {self.backend.name} backend "
                        f"(its layers: {', '.join(names[:6])}, ...)"
                    )
                frozen.update(matched)
        for layer in layers:
            layer.trainable = layer.name not in frozen

    def unfreeze_backend(self):
        """Makes every backend layer trainable (BatchNorm leaves inference mode); recompile afterwards."""
        self.backend_model.trainable = True
        self.freeze_backend = False

    def _load_backend_weights(self, path):
        path = path or self.backend.default_weights_path()
        try:
            self.not_pretrained = load_backend_weights(self.backend_model, path, self.backend.normalization())
        except FileNotFoundError:
            warnings.warn(
                f"{self.backend.name}: no backend weights at {path}; the backend is randomly initialised.",
                stacklevel=3,
            )
            return None
        return path

    def _build_models(self):
        image = keras.Input(self.input_shape, name="input_image")
        true_boxes = keras.Input((1, 1, 1, self.max_box_per_image, 4), name="true_boxes")
        x = self.backend_model(image)
        # Optional detection layers trained from scratch, like darknet's conv_19/conv_20 on Darknet-19: a frozen
        # ImageNet backbone gives classification features that one linear 1x1 conv localises poorly.
        for index in range(1, self.head_layers + 1):
            x = conv_bn_leaky(x, self.head_filters, 3, index, prefix="head_")
        # Small initial weights: the head starts near "anchor prior at the cell centre, objectness 0.5".
        head = keras.layers.Conv2D(
            self.nb_box * (4 + 1 + self.nb_class),
            1,
            name="DetectionLayer",
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
        )(x)
        output = keras.layers.Reshape((self.grid_h, self.grid_w, self.nb_box, 4 + 1 + self.nb_class), name="reshape")(
            head
        )
        training_output = GroundTruthPassthrough(name="true_boxes_hack")([output, true_boxes])
        model = YoloTrainingModel(
            inputs={"input_image": image, "true_boxes": true_boxes},
            outputs=training_output,
            yolo_loss=self.loss,
            name="yolov2",
        )
        inference_model = keras.Model(image, output, name="yolov2_inference")
        return model, inference_model

    def load_weights(self, path):
        """Loads a whole detector's weights (backend + head): this project's .weights.h5 files,
        converted darknet detectors, and keras-yolo2's checkpoints (e.g. full_yolo_raccoon.h5)."""
        if not os.path.exists(path):
            raise FileNotFoundError(f"Weights file not found: {path}")
        if is_keras2_file(path):
            self._load_keras2_detector(path)
            return
        self._check_metadata(read_metadata(path), path)
        try:
            self.model.load_weights(path)
        except (ValueError, KeyError) as e:
            raise ValueError(
                f"{path} does not fit this detector ({self.backend.name} backend, input "
                f"{self.input_w}x{self.input_h}, {self.nb_class} labels, {self.nb_box} anchors): was it trained "
                f"with another config? Keras said: {str(e).splitlines()[0]}"
            ) from None

    def metadata(self):
        """What a saved detector records about itself, so it is never loaded into a different one."""
        return {"backend": self.backend.name, "backend_options": self.backend_options,
                "input_size": [self.input_h, self.input_w], "input_channels": self.input_channels,
                "head_layers": self.head_layers, "head_filters": self.head_filters, "labels": self.labels,
                "anchors": self.anchors}  # fmt: skip

    def _check_metadata(self, saved, path):
        if not saved:
            return  # files written before detectors recorded this
        differences = []
        if saved["backend"].lower() != self.backend.name.lower() or saved["backend_options"] != self.backend_options:
            differences.append(f"backend {saved['backend']} {saved['backend_options'] or ''} (this one: "
                               f"{self.backend.name} {self.backend_options or ''})")  # fmt: skip
        if saved.get("input_channels", 3) != self.input_channels:
            differences.append(f"{saved.get('input_channels', 3)} input channels (this one: {self.input_channels})")
        head = (saved.get("head_layers", 0), saved.get("head_filters", 256))
        if head[0] != self.head_layers or (head[0] and head[1] != self.head_filters):
            differences.append(f"head_layers {head[0]}, head_filters {head[1]} (this one: {self.head_layers}, "
                               f"{self.head_filters})")  # fmt: skip
        if saved["labels"] != self.labels:
            differences.append(f"labels {saved['labels']} (this one: {self.labels})")
        if len(saved["anchors"]) != len(self.anchors):
            differences.append(f"{len(saved['anchors']) // 2} anchors (this one: {self.nb_box})")
        if differences:
            raise ValueError(
                f"{path} was trained as a different detector: " + "; ".join(differences) + ". Use the config it "
                "was trained with (runs/NAME/config.json beside its weights), or load only its backend."
            )
        if saved["anchors"] != self.anchors:
            warnings.warn(f"{path} was trained with anchors {saved['anchors']}, this detector has {self.anchors}: "
                          "its boxes will be sized for the old ones.", stacklevel=3)  # fmt: skip

    def _load_keras2_detector(self, path):
        """keras-yolo2 saved whole models in Keras 2's HDF5 layout: the backend as one nested model,
        then the head named DetectionLayer."""
        file_layers, _ = read_keras2_weights(path)
        if self.head_layers:
            raise ValueError(f"{path}: keras-yolo2 detectors have a single 1x1 conv head; set model.head_layers to 0")
        if "DetectionLayer" not in file_layers:
            raise ValueError(f"{path} is a backend file (no detection head), not a detector. {DETECTOR_VS_BACKEND}")
        layers = {h5_layer_name(layer.name): layer for layer in layers_with_weights(self.backend_model)}
        missing = sorted(set(layers) - set(file_layers))
        if missing:
            raise ValueError(
                f"{path} does not hold the {self.backend.name} backend's layers ({', '.join(missing[:4])} ...): "
                "was it trained with another backend?"
            )
        head = self.model.get_layer("DetectionLayer")
        found, expected = file_layers["DetectionLayer"][0].shape[-1], head.kernel.shape[-1]
        if found != expected:
            raise ValueError(
                f"{path}: its head has {found} outputs, this detector {expected} = {self.nb_box} anchors x "
                f"(5 + {self.nb_class} labels). Use the labels and anchors it was trained with, or load only "
                "its backend (model.backend_weights) and train a new head."
            )
        layers["DetectionLayer"] = head
        assign_by_name(layers, file_layers, path, self.backend.normalization())
        if getattr(self.backend, "passthrough", None) == "darknet":
            warnings.warn(
                f"{path} is a keras-yolo2 file: its Full Yolo passthrough was TensorFlow's space_to_depth. Set "
                'model.backend_options to {"passthrough": "space_to_depth"} to use it as it was trained.',
                stacklevel=2,
            )

    def detect(self, images, obj_thresh=0.3, nms_thresh=0.45):
        """RGB uint8 images of any sizes -> per image (boxes as continuous pixel corners of that image,
        scores, class ids), one forward pass for all of them."""
        if not len(images):
            return []
        batch = np.stack([network_input(image, (self.input_h, self.input_w), self.input_channels) for image in images])
        netout = self.inference_model.predict_on_batch(batch)
        return detect(netout, self.anchors, [image.shape[:2] for image in images], obj_thresh, nms_thresh)

    def predict(self, image, threshold=0.3, nms_threshold=0.45):
        """Detections in one image: an RGB array (H, W, 3) (gray (H, W) and RGBA are converted) or an
        image file path; a list of them gives a list of results.

        Each detection is {"label", "score", "xmin", "ymin", "xmax", "ymax"} in pixels of that image,
        VOC convention (1-based, inclusive, like the annotation XML), best score first.
        """
        if isinstance(image, list | tuple):
            results = self.detect([as_rgb(im) for im in image], threshold, nms_threshold)
            return [to_records(r, self.labels) for r in results]
        return to_records(self.detect([as_rgb(image)], threshold, nms_threshold)[0], self.labels)

    def save_weights(self, path):
        """Whole-detector weights (.weights.h5) that record backend, input size, labels and anchors."""
        save_weights_atomic(self.model, path, self.metadata())

    def head(self):
        """The layers after the backend that hold weights: head_layers conv-BN pairs, then DetectionLayer."""
        names = [f"head_{kind}_{i}" for i in range(1, self.head_layers + 1) for kind in ("conv", "norm")]
        return [self.model.get_layer(name) for name in names + ["DetectionLayer"]]

    def save_head(self, path):
        """Only the head (one group per layer), with the detector's description; `YOLO.from_parts` joins it to a
        backend."""
        tmp = path + ".tmp"
        with h5py.File(tmp, "w") as f:
            f.attrs[METADATA_KEY] = json.dumps(self.metadata())
            for layer in self.head():
                group = f.create_group(layer.name)
                for i, value in enumerate(layer.get_weights()):
                    group.create_dataset(str(i), data=value)
        os.replace(tmp, path)

    @classmethod
    def from_parts(cls, backend_weights, head_weights, input_size=None, max_box_per_image=10):
        """A detector assembled from a backend file and a head file (save_head) without training, like
        MATLAB's assembleNetwork. Backend, labels and anchors come from the head file."""
        with h5py.File(head_weights, "r") as f:
            if METADATA_KEY not in f.attrs or "DetectionLayer" not in f:
                raise ValueError(f"{head_weights} is not a head file written by YOLO.save_head")
            meta = json.loads(f.attrs[METADATA_KEY])
            arrays = {name: [np.asarray(group[str(i)]) for i in range(len(group))] for name, group in f.items()}
        if not os.path.exists(backend_weights):
            raise FileNotFoundError(f"Backend weights file not found: {backend_weights}")
        yolo = cls(meta["backend"], input_size or meta["input_size"], meta["labels"], max_box_per_image,
                   meta["anchors"], backend_options=meta["backend_options"], backend_weights=backend_weights,
                   input_channels=meta.get("input_channels", 3), head_layers=meta.get("head_layers", 0),
                   head_filters=meta.get("head_filters", 256))  # fmt: skip
        for layer in yolo.head():
            expected = [tuple(w.shape) for w in layer.weights]
            if [a.shape for a in arrays[layer.name]] != expected:
                raise ValueError(f"{head_weights}: {layer.name} has shapes {[a.shape for a in arrays[layer.name]]}, "
                                 f"the {meta['backend']} backend needs {expected}")  # fmt: skip
            layer.set_weights(arrays[layer.name])
        return yolo

    @property
    def input_shape(self):
        return self.input_h, self.input_w, self.input_channels

    def summary(self, **kwargs):
        self.model.summary(**kwargs)


def as_rgb(image):
    """A file path or an array -> RGB uint8 (H, W, 3)."""
    if isinstance(image, str | os.PathLike):
        path = os.fspath(image)
        decoded = decode_image(path)
        if decoded is None:
            raise ValueError(f"Cannot read image {path}: missing or not an image file")
        return decoded
    return to_rgb_uint8(image)


def to_records(detection, labels):
    """(continuous corners, scores, class ids) -> detection records in the VOC pixel convention."""
    boxes, scores, class_ids = detection
    return [
        {
            "label": labels[int(c)],
            "score": float(s),
            "xmin": float(b[0]) + 1,
            "ymin": float(b[1]) + 1,
            "xmax": float(b[2]),
            "ymax": float(b[3]),
        }
        for b, s, c in zip(boxes, scores, class_ids)
    ]


def save_weights_atomic(model, path, metadata=None):
    """Keras writes in place; a crash mid-write would destroy the previous file. Write aside, then rename.
    `metadata` (YOLO.metadata()) is stored as a JSON attribute of the file."""
    tmp = re.sub(r"\.weights\.h5$", "", path) + ".tmp.weights.h5"
    model.save_weights(tmp)
    if metadata is not None:
        with h5py.File(tmp, "a") as f:
            f.attrs[METADATA_KEY] = json.dumps(metadata)
    os.replace(tmp, path)


METADATA_KEY = "yolov2_detector"


def read_metadata(path):
    """The detector description save_weights_atomic stored, or None."""
    with h5py.File(path, "r") as f:
        value = f.attrs.get(METADATA_KEY)
    return json.loads(value) if value is not None else None
