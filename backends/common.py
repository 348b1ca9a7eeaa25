"""What every backend shares: the registry, conv-BN-leaky blocks, and putting pretrained arrays
into a backend's layers (a gray first layer made from an RGB one included). The files those arrays
come from are read in weight_files.py.

A backend is a feature extractor: a Keras model from RGB (or gray) 0..255 images to a
stride-32 feature map, normalising its own input. Register one with
`@register_backend("Name")` on a subclass of `Backend`.
"""

import inspect
import os

import keras
import numpy as np

from custom_layers import Normalization
from errors import UserError

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEIGHTS_DIR = os.path.join(PROJECT_DIR, "weights")

BACKENDS = {}

# Keras' default 0.99 lets the moving statistics trail the weights by hundreds of steps, so a
# short run from scratch evaluates far worse than it trains; 0.97 (ultralytics' 0.03 in PyTorch
# terms) follows within tens of steps. Pretrained statistics are loaded as they are.
BN_MOMENTUM = 0.97


class BackendError(UserError):
    """An unknown backend, options it does not take, or pretrained arrays that do not fit its layers."""


def register_backend(name):
    def decorator(cls):
        cls.name = name
        BACKENDS[name.lower()] = cls
        return cls

    return decorator


def get_backend(name, **options):
    try:
        cls = BACKENDS[name.lower()]
    except KeyError:
        known = ", ".join(sorted(c.name for c in BACKENDS.values()))
        raise BackendError(f"Unknown backend {name!r}. Known backends: {known}.") from None
    try:
        return cls(**options)
    except TypeError as e:
        raise BackendError(f"{cls.name}: model.backend_options {options} do not fit it ({e})") from None


class Backend:
    """Base class. Subclasses set the class attributes and implement `features`."""

    name = None
    weights_file = None  # default file name under weights/
    # Normalization(scale, offset, bgr) parameters mapping 0..255 RGB to the net's input.
    scale = 1.0 / 255.0
    offset = 0.0
    bgr = False
    # darknet detectors' backends (Full Yolo, Tiny Yolo) already end in detection layers
    ends_in_detection_layers = False
    # where build() itself took pretrained weights from (Keras' download), or None: then they come from a file
    weights_built_in = None

    def features(self, x):
        """Maps the normalised image tensor to the stride-32 feature tensor."""
        raise NotImplementedError

    def build(self, input_shape):
        """input_shape (h, w, channels): 3 for RGB, 1 for a gray first layer (see gray_first_layer)."""
        image = keras.Input(shape=input_shape, name="input_image")
        x = Normalization(*self.normalization(input_shape[-1]), name="normalize")(image)
        model = keras.Model(image, self.features(x), name=self.model_name)
        set_batchnorm_momentum(model, BN_MOMENTUM)
        if input_shape[0] is not None:  # None: any size (multi-scale), checked by check_stride for each one used
            check_stride(model, input_shape[:2], self.name)
        return model

    def normalization(self, channels=3):
        """(scale, offset, bgr) for the Normalization layer; one channel takes the channels' means."""
        if channels == 3:
            return self.scale, self.offset, self.bgr
        scale, offset = _per_channel(self.scale), _per_channel(self.offset)
        return float(scale.mean()), float(offset.mean()), False

    def resolved_options(self):
        """The constructor's options with their defaults filled in, less `weights` (where the weights come
        from is not architecture): backends with equal resolved options build the same layers."""
        parameters = inspect.signature(type(self).__init__).parameters.values()
        named = [p.name for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD and p.name not in ("self", "weights")]
        return {name: getattr(self, name) for name in named}

    @property
    def model_name(self):
        return self.name.lower().replace(" ", "_") + "_backend"

    def default_weights_path(self):
        return os.path.join(WEIGHTS_DIR, self.weights_file)


def check_stride(model, input_hw, name):
    """The grid `model` gives for an input of `input_hw` pixels; an error unless it is input / 32."""
    grid = tuple(model.compute_output_shape((1, *input_hw, model.input.shape[-1]))[1:3])
    if grid != (input_hw[0] // 32, input_hw[1] // 32):
        raise BackendError(f"{name} backend must reduce the input 32 times, but a {input_hw[1]}x{input_hw[0]} input "
                           f"gives a {grid[1]}x{grid[0]} grid")  # fmt: skip
    return grid


def conv_bn_leaky(x, filters, kernel_size, index, strides=1, prefix=""):
    """Darknet's [convolutional] block with batch_normalize=1 and leaky (0.1) activation.

    Layer names follow keras-yolo2 (`conv_<i>`, `norm_<i>`) so weight files match.
    """
    x = keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding="same", use_bias=False, name=f"{prefix}conv_{index}"
    )(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{prefix}norm_{index}")(x)
    return keras.layers.LeakyReLU(negative_slope=0.1)(x)


def set_batchnorm_momentum(model, momentum):
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum


def maxpool(x, stride=2):
    return keras.layers.MaxPooling2D(pool_size=2, strides=stride, padding="same")(x)


def _per_channel(value):
    return np.broadcast_to(np.asarray(value, np.float64), (3,))


def gray_first_layer(arrays, scale, offset):
    """An RGB first convolution's [kernel, (bias)] -> (the same layer for one gray input channel,
    the per-filter shift it leaves for the next layer, or None).

    On a gray image g (R = G = B) the RGB layer computes sum_c W_c (s_c g + o_c) + b, with s_c, o_c
    the backend's per-channel normalisation. The gray layer sees s g + o with s, o the channels'
    means, so its kernel is sum_c W_c s_c / s (the plain sum over input channels when all channels
    are scaled alike) and the offsets' difference, sum W_c (o_c - s_c o / s), goes into its bias;
    a layer without bias returns it as the shift (zero for backends that scale and offset every
    channel alike). Away from the zero-padded border the gray and RGB layers then agree.
    """
    kernel = np.asarray(arrays[0], np.float64)
    s, o = _per_channel(scale), _per_channel(offset)
    s_gray, o_gray = s.mean(), o.mean()
    gray = [np.einsum("hwcf,c->hwf", kernel, s / s_gray)[:, :, None, :].astype(arrays[0].dtype)]
    shift = np.einsum("hwcf,c->f", kernel, o - s * o_gray / s_gray)
    if len(arrays) == 1:
        return gray, shift
    return gray + [(arrays[1] + shift).astype(arrays[1].dtype)] + list(arrays[2:]), None


def assign_by_name(layers, file_layers, path, normalization=None):
    """Sets each Keras layer from the file's arrays of the same name, checking shapes.

    With `normalization` (the backend's RGB (scale, offset, bgr)), an RGB kernel goes into a
    layer built for one input channel through gray_first_layer; a shift that layer could not
    take (no bias) goes into the moving mean of the BatchNormalization after it.
    """
    shift = None
    for name, layer in layers.items():
        arrays = list(file_layers[name])
        expected = [tuple(w.shape) for w in layer.weights]
        if normalization and _rgb_into_gray(arrays, expected):
            arrays, shift = gray_first_layer(arrays, *normalization[:2])
        elif shift is not None:
            if isinstance(layer, keras.layers.BatchNormalization):
                index = [w.name for w in layer.weights].index("moving_mean")
                arrays[index] = (arrays[index] - shift).astype(arrays[index].dtype)
            shift = None
        if [a.shape for a in arrays] != expected:
            raise BackendError(
                f"{path}: layer {name} has weights of shapes {[a.shape for a in arrays]} "
                f"but the model expects {expected}."
            )
        layer.set_weights(arrays)


def _rgb_into_gray(arrays, expected):
    shape = np.shape(arrays[0])
    return len(shape) == 4 and shape[2] == 3 and expected[0] == (*shape[:2], 1, shape[3])


def layers_with_weights(model):
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.extend(layers_with_weights(layer))
        elif layer.weights:
            found.append(layer)
    return found
