"""keras.applications models as YOLOv2 backends: each model's last (stride-32) feature map, with its
own input preprocessing inside the detector.

Adding one is one line in APPLICATIONS: the keras.applications constructor and how its
preprocess_input maps 0..255 RGB (models that normalise inside get the same from our Normalization
layer, their own layers cut off in OWN_PREPROCESSING). ImageNet weights load from
weights/<name>_backend.h5 (Keras' own *_notop.h5 files have that layout), or, with backend_options
{"weights": "imagenet"}, Keras downloads them (needs internet).
"""

import keras

from backends.common import Backend, BackendError, assign_by_name, layers_with_weights, register_backend

# Normalization (scale, offset, bgr) equivalent to each family's preprocess_input.
CAFFE = (1.0, [-103.939, -116.779, -123.68], True)  # BGR, ImageNet mean subtracted
TF = (1 / 127.5, -1.0, False)  # -1..1
TORCH = ([1 / (255 * 0.229), 1 / (255 * 0.224), 1 / (255 * 0.225)], [-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225],
         False)  # fmt: skip

APPLICATIONS = {
    "ResNet50": CAFFE,
    "VGG16": CAFFE,
    "InceptionV3": TF,
    "DenseNet201": TORCH,
    "Xception": TF,
    "MobileNetV2": TF,
    "NASNetMobile": TF,
    "EfficientNetB0": TORCH,
    "ConvNeXtTiny": TORCH,
}

# Models that normalise their 0..255 input themselves start at these layers. EfficientNet's own
# Normalization takes its statistics from the weights and divides by the square root of the
# ImageNet std unless built with weights="imagenet" (keras' fix for the original model), so a
# local weights file would be preprocessed differently; ConvNeXt's has fixed statistics but does
# not build for one channel. Both compute TORCH.
OWN_PREPROCESSING = {"EfficientNetB0": "stem_conv_pad", "ConvNeXtTiny": "convnext_tiny_stem"}


class KerasApplication(Backend):
    """Base of the generated classes below; `constructor` names the keras.applications function."""

    constructor = None

    def __init__(self, weights=None):
        if weights not in (None, "imagenet"):
            raise BackendError(f"{self.name}: backend_options weights must be 'imagenet' or absent, got {weights!r}")
        self.weights = weights
        self.weights_built_in = "Keras' ImageNet download" if weights else None

    def features(self, x):
        h, w, channels = x.shape[1:]
        # any size (multi-scale training): no border; YOLO checks the grid at each size it trains on
        pad, net = (0, self._net((None, None, channels))) if h is None else self._stride32_net(h, w, channels)
        if pad:
            # valid-padded nets (InceptionV3) lose a border: pad so the grid is still input / 32
            x = keras.layers.ZeroPadding2D(pad, name="stride32_padding")(x)
        if self.weights:
            self._load_imagenet(net)
        return net(x)

    def _net(self, input_shape, weights=None):
        net = getattr(keras.applications, self.constructor)(include_top=False, weights=weights,
                                                            input_shape=tuple(input_shape))  # fmt: skip
        start = OWN_PREPROCESSING.get(self.constructor)
        return keras.Model(net.get_layer(start).input, net.output, name=net.name) if start else net

    def _load_imagenet(self, net):
        """Keras' download, built for RGB; a gray net takes its first layer through gray_first_layer."""
        imagenet = self._net((*net.input.shape[1:3], 3), "imagenet")
        pairs = list(zip(layers_with_weights(net), layers_with_weights(imagenet)))  # same constructor, same order
        layers = {ours.name: ours for ours, _ in pairs}
        weights = {ours.name: theirs.get_weights() for ours, theirs in pairs}
        assign_by_name(layers, weights, f"{self.name} ImageNet weights", self.normalization())

    def _stride32_net(self, h, w, channels):
        """The net for the smallest border (a multiple of 8 pixels) that gives a (h / 32, w / 32) grid."""
        for pad in range(0, 129, 8):
            net = self._net((h + 2 * pad, w + 2 * pad, channels))
            out = tuple(net.output.shape[1:3])
            if out == (h // 32, w // 32):
                return pad, net
            if out[0] > h // 32:
                break
        raise BackendError(f"{self.name}: no padding gives a stride-32 grid for a {w}x{h} input")


def _register(name, preprocessing):
    scale, offset, bgr = preprocessing
    attributes = {"constructor": name, "weights_file": f"{name.lower()}_backend.h5", "scale": scale,
                  "offset": offset, "bgr": bgr}  # fmt: skip
    register_backend(name)(type(name, (KerasApplication,), attributes))


for _name, _preprocessing in APPLICATIONS.items():
    _register(_name, _preprocessing)
