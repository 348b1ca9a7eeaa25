"""What every backend shares: the registry, conv-BN-leaky blocks, weight files.

A backend is a feature extractor: a Keras model from RGB (or gray) 0..255 images to a
stride-32 feature map, normalising its own input. Register one with
`@register_backend("Name")` on a subclass of `Backend`.
"""

import os

import h5py
import keras
import numpy as np

from custom_layers import Normalization

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEIGHTS_DIR = os.path.join(PROJECT_DIR, "weights")

BACKENDS = {}

# Keras' default 0.99 lets the moving statistics trail the weights by hundreds of steps, so a
# short run from scratch evaluates far worse than it trains; 0.97 (ultralytics' 0.03 in PyTorch
# terms) follows within tens of steps. Pretrained statistics are loaded as they are.
BN_MOMENTUM = 0.97


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
        raise ValueError(f"Unknown backend {name!r}. Known backends: {known}.") from None
    return cls(**options)


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
        if model.output.shape[1] is None or input_shape[0] // model.output.shape[1] != 32:
            raise ValueError(f"{self.name} backend must reduce the input 32 times, got {model.output.shape}")
        return model

    def normalization(self, channels=3):
        """(scale, offset, bgr) for the Normalization layer; one channel takes the channels' means."""
        if channels == 3:
            return self.scale, self.offset, self.bgr
        scale, offset = _per_channel(self.scale), _per_channel(self.offset)
        return float(scale.mean()), float(offset.mean()), False

    @property
    def model_name(self):
        return self.name.lower().replace(" ", "_") + "_backend"

    def default_weights_path(self):
        return os.path.join(WEIGHTS_DIR, self.weights_file)


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


def h5_layer_name(name):
    """Keras 3 forbids '/' in layer names; Keras 2 files use it (fire2/squeeze1x1)."""
    return name.replace("/", "_")


DETECTOR_VS_BACKEND = (
    "A backend file holds only the feature extractor (model.backend_weights, e.g. weights/full_yolo_backend.h5); "
    "a detector file holds backend and head (train.pretrained_weights or -w, e.g. runs/NAME/best.weights.h5)."
)


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


def is_keras2_file(path):
    """Keras 2 HDF5 weights (layer_names attribute), as opposed to Keras 3's .weights.h5 layout."""
    with h5py.File(path, "r") as f:
        group = f["model_weights"] if "model_weights" in f else f
        return "layer_names" in group.attrs


def read_keras2_weights(path):
    """Keras 2 HDF5 weights -> ({layer name: [arrays]}, attributes).

    A group normally holds one layer's weights (named like "conv1_3/kernel:0"); a nested model
    (keras-yolo2 saved its backend as one) holds all of its layers', told apart by the weight-name
    prefixes ("conv_1/kernel:0", "norm_1/gamma:0"). Names with
    '/' (SqueezeNet's fire2/squeeze1x1) become '_' as Keras 3 requires.
    """
    try:
        f = h5py.File(path, "r")
    except FileNotFoundError:
        raise
    except OSError as e:
        raise ValueError(f"{path}: not a readable HDF5 weights file ({e})") from None
    with f:
        group = f["model_weights"] if "model_weights" in f else f
        if "layer_names" not in group.attrs:
            raise ValueError(f"{path}: not a Keras 2 style weights file (no layer_names). {DETECTOR_VS_BACKEND}")
        attrs = {"not_pretrained": [_text(n) for n in f.attrs.get("not_pretrained", [])]}
        layers = {}
        for name in map(_text, group.attrs["layer_names"]):
            g = group[name]
            names = [_text(n) for n in g.attrs.get("weight_names", [])]
            if len({n.rsplit("/", 1)[0] for n in names}) == 1:  # one layer (its weight names may carry suffixes)
                layers[h5_layer_name(name)] = [np.asarray(g[n]) for n in names]
            else:  # a nested model: one layer per weight-name prefix
                for n in names:
                    layers.setdefault(h5_layer_name(n.rsplit("/", 1)[0]), []).append(np.asarray(g[n]))
    return layers, attrs


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
            raise ValueError(
                f"{path}: layer {name} has weights of shapes {[a.shape for a in arrays]} "
                f"but the model expects {expected}."
            )
        layer.set_weights(arrays)


def _rgb_into_gray(arrays, expected):
    shape = np.shape(arrays[0])
    return len(shape) == 4 and shape[2] == 3 and expected[0] == (*shape[:2], 1, shape[3])


def load_backend_weights(model, path, normalization=None):
    """Loads a Keras 2 style HDF5 weights file by layer name into `model`.

    That is the layout of keras-yolo2's `*_backend.h5`, Keras applications'
    `*_notop.h5` files, and the files this project writes. Every layer of
    `model` that has weights must be found in the file with the same shapes.

    A model built for gray input takes an RGB file's first layer through gray_first_layer, given
    the backend's RGB `normalization` (scale, offset, bgr).

    Returns the names of layers the file marks as not pretrained (a converted darknet
    prefix such as darknet19_448.conv.23 covers only the first layers).
    """
    layers = {h5_layer_name(layer.name): layer for layer in layers_with_weights(model)}
    file_layers, attrs = read_keras2_weights(path)
    if "DetectionLayer" in file_layers:
        raise ValueError(f"{path} is a whole detector's weights, not a backend file. {DETECTOR_VS_BACKEND}")
    _pair_auto_named(layers, file_layers)
    missing = sorted(set(layers) - set(file_layers))
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise ValueError(
            f"{path}: does not hold weights for {len(missing)} layer(s) of the {model.name} "
            f"model ({shown}). Is it the backend file for this backend?"
        )
    assign_by_name(layers, file_layers, path, normalization)
    return attrs["not_pretrained"]


def _pair_auto_named(layers, file_layers):
    """Layers Keras names itself (ConvNeXt's last `layer_normalization`) get another suffix each time a
    model is built in a process; unmatched layers on both sides are paired in order, as Keras itself
    loads HDF5 weights, and assign_by_name still checks every shape."""
    ours = [name for name in layers if name not in file_layers]
    theirs = [name for name in file_layers if name not in layers]
    if ours and len(ours) == len(theirs):
        for mine, name in zip(ours, theirs):
            file_layers[mine] = file_layers.pop(name)


def save_backend_weights(model, path, not_pretrained=()):
    """Writes `model`'s weights in the Keras 2 HDF5 layout that load_backend_weights reads;
    `not_pretrained` names layers left as initialised (they keep training when the backend is frozen)."""
    tmp = path + ".tmp"
    with h5py.File(tmp, "w") as f:
        layers = layers_with_weights(model)
        f.attrs["layer_names"] = [layer.name.encode() for layer in layers]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["not_pretrained"] = [name.encode() for name in not_pretrained]
        for layer in layers:
            g = f.create_group(layer.name)
            names = [f"{layer.name}/{w.name}:0".encode() for w in layer.weights]
            g.attrs["weight_names"] = names
            for name, value in zip(names, layer.get_weights()):
                g.create_dataset(name.decode(), data=value)
    os.replace(tmp, path)


def layers_with_weights(model):
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.extend(layers_with_weights(layer))
        elif layer.weights:
            found.append(layer)
    return found
