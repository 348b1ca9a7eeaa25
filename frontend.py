"""The YOLOv2 detector: a backend (feature extractor), a 1x1 conv head, the loss.

yolo = YOLO(backend="Full Yolo", input_size=416, labels=[...],
            max_box_per_image=10, anchors=[w1, h1, ...])
yolo.model            # training model: [input_image, true_boxes] -> head output
yolo.inference_model  # input_image -> (batch, grid_h, grid_w, nb_box, 4+1+nb_class)
"""

import warnings

import keras

from backends import get_backend, load_backend_weights
from config import as_hw
from custom_layers import GroundTruthPassthrough
from loss import YoloLoss


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
    ):
        self.input_h, self.input_w = as_hw(input_size)
        self.labels = list(labels)
        self.nb_class = len(self.labels)
        if len(anchors) % 2 or not anchors:
            raise ValueError(f"anchors must be pairs of width, height in grid units, got {len(anchors)} numbers")
        self.anchors = [float(a) for a in anchors]
        self.nb_box = len(self.anchors) // 2
        self.max_box_per_image = int(max_box_per_image)
        self.freeze_backend = freeze_backend

        self.backend = get_backend(backend, **(backend_options or {}))
        self.backend_model = self.backend.build((self.input_h, self.input_w, 3))
        self.backend_weights = None
        if load_pretrained:
            self.backend_weights = self._load_backend_weights(backend_weights)
        # trainable=False also keeps BatchNormalization in inference mode.
        self.backend_model.trainable = not freeze_backend
        self.grid_h, self.grid_w = self.backend_model.output.shape[1:3]

        self.loss = YoloLoss(self.anchors, **(loss_options or {}))
        self.model, self.inference_model = self._build_models()

    def _load_backend_weights(self, path):
        path = path or self.backend.default_weights_path()
        try:
            load_backend_weights(self.backend_model, path)
        except FileNotFoundError:
            warnings.warn(
                f"{self.backend.name}: no backend weights at {path}; the backend is randomly initialised.",
                stacklevel=3,
            )
            return None
        return path

    def _build_models(self):
        image = keras.Input((self.input_h, self.input_w, 3), name="input_image")
        true_boxes = keras.Input((1, 1, 1, self.max_box_per_image, 4), name="true_boxes")
        features = self.backend_model(image)
        # Small initial weights: the head starts near "anchor prior at the cell centre, objectness 0.5".
        head = keras.layers.Conv2D(
            self.nb_box * (4 + 1 + self.nb_class),
            1,
            name="DetectionLayer",
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
        )(features)
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
        """Loads a full detector's weights (backend + head) saved by this project."""
        self.model.load_weights(path)

    def save_weights(self, path):
        self.model.save_weights(path)

    def summary(self, **kwargs):
        self.model.summary(**kwargs)
