"""Serializable custom layers used by the detector.

Each is registered with Keras so that saved models load without custom_objects.
No Lambda layers: they do not survive saving and cannot be inspected.
"""

import keras
from keras import ops

PACKAGE = "yolov2"


@keras.saving.register_keras_serializable(package=PACKAGE)
class Normalization(keras.layers.Layer):
    """Maps 0..255 RGB pixels (uint8 or float) to what a backend was trained on.

    `x * scale + offset` per channel, optionally after RGB -> BGR (Caffe-style nets).
    Done inside the model so the input pipeline can hand over uint8, which is
    cheaper to move to an accelerator than float32.
    """

    def __init__(self, scale=1.0, offset=0.0, bgr=False, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale
        self.offset = offset
        self.bgr = bgr

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.bgr:
            x = ops.flip(x, axis=-1)
        scale = ops.convert_to_tensor(self.scale, dtype=self.compute_dtype)
        offset = ops.convert_to_tensor(self.offset, dtype=self.compute_dtype)
        return x * scale + offset

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "offset": self.offset, "bgr": self.bgr}


@keras.saving.register_keras_serializable(package=PACKAGE)
class Reorg(keras.layers.Layer):
    """YOLOv2's passthrough: (H, W, C) -> (H/2, W/2, 4C).

    mode="darknet" reproduces darknet's reorg layer bit for bit. Darknet's
    forward_reorg_layer calls reorg_cpu(..., forward=0) with the *input* sizes,
    which reads the channel-major input buffer as a (C/4, 2H, 2W) array and
    writes it as (C, H, W); the result, read as (4C, H/2, W/2), is not
    TensorFlow's space_to_depth. Weights converted from darknet need this order.

    mode="space_to_depth" is TensorFlow's ordering, which keras-yolo2's own
    backend files were trained with.
    """

    def __init__(self, mode="darknet", stride=2, **kwargs):
        super().__init__(**kwargs)
        if mode not in ("darknet", "space_to_depth"):
            raise ValueError(f"Reorg mode must be 'darknet' or 'space_to_depth', got {mode!r}")
        self.mode = mode
        self.stride = stride

    def call(self, inputs):
        s = self.stride
        c = inputs.shape[-1]
        h, w = ops.shape(inputs)[1:3]  # dynamic under multi-scale training, ints otherwise
        if self.mode == "space_to_depth":
            x = ops.reshape(inputs, (-1, h // s, s, w // s, s, c))
            x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
            return ops.reshape(x, (-1, h // s, w // s, c * s * s))
        # darknet: view the NCHW buffer as (c2, j, dy, i, dx) with c2 < C/s^2,
        # write channel k = (dy*s + dx) * C/s^2 + c2 at (j, i).
        out_c = c // (s * s)
        x = ops.transpose(inputs, (0, 3, 1, 2))
        x = ops.reshape(x, (-1, out_c, h, s, w, s))
        x = ops.transpose(x, (0, 3, 5, 1, 2, 4))
        x = ops.reshape(x, (-1, c * s * s, h // s, w // s))
        return ops.transpose(x, (0, 2, 3, 1))

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        s = self.stride
        return (b, None if h is None else h // s, None if w is None else w // s, c * s * s)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "stride": self.stride}


@keras.saving.register_keras_serializable(package=PACKAGE)
class GridReshape(keras.layers.Layer):
    """(batch, grid_h, grid_w, nb_box * values) -> (batch, grid_h, grid_w, nb_box, values) for any grid size,
    which keras.layers.Reshape (a fixed target shape) cannot do for multi-scale training."""

    def __init__(self, nb_box, **kwargs):
        super().__init__(**kwargs)
        self.nb_box = nb_box

    def call(self, inputs):
        h, w = ops.shape(inputs)[1:3]
        return ops.reshape(inputs, (-1, h, w, self.nb_box, inputs.shape[-1] // self.nb_box))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:3], self.nb_box, input_shape[-1] // self.nb_box)

    def get_config(self):
        return {**super().get_config(), "nb_box": self.nb_box}


@keras.saving.register_keras_serializable(package=PACKAGE)
class GroundTruthPassthrough(keras.layers.Layer):
    """keras-yolo2's "hack" layer: returns the head output unchanged.

    Its second input, `true_boxes` (batch, 1, 1, 1, max_box_per_image, 4), makes
    the ground-truth boxes a model input so that the loss (which needs every box
    of an image for darknet's no-object test) can read them. The inference model
    is built without it.
    """

    def call(self, inputs):
        output, _true_boxes = inputs
        return output

    def compute_output_shape(self, input_shape):
        return input_shape[0]
