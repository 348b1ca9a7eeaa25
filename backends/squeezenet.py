"""SqueezeNet v1.1 with keras-yolo2's layer names (fireN/squeeze1x1 -> fireN_squeeze1x1)."""

import keras

from backends.common import Backend, register_backend

# (squeeze, expand) filters of fire modules 2..9; max-pools follow fire3 and fire5.
FIRE_MODULES = [(16, 64), (16, 64), (32, 128), (32, 128), (48, 192), (48, 192), (64, 256), (64, 256)]


def fire(x, index, squeeze, expand):
    name = f"fire{index}"
    x = keras.layers.Conv2D(squeeze, 1, activation="relu", name=f"{name}_squeeze1x1")(x)
    left = keras.layers.Conv2D(expand, 1, activation="relu", name=f"{name}_expand1x1")(x)
    right = keras.layers.Conv2D(expand, 3, padding="same", activation="relu", name=f"{name}_expand3x3")(x)
    return keras.layers.Concatenate(name=f"{name}_concat")([left, right])


@register_backend("SqueezeNet")
class SqueezeNet(Backend):
    weights_file = "squeezenet_backend.h5"
    # Caffe preprocessing of the original weights: BGR, mean subtracted, no scaling.
    scale = 1.0
    offset = [-103.939, -116.779, -123.68]
    bgr = True

    def features(self, x):
        # 'same' padding (keras-yolo2 used 'valid') keeps the grid at input/32.
        x = keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu", name="conv1")(x)
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
        for index, (squeeze, expand) in enumerate(FIRE_MODULES, start=2):
            x = fire(x, index, squeeze, expand)
            if index in (3, 5):
                x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name=f"pool{index}")(x)
        # Three stride-2 stages plus conv1 give 16; one more pool reaches stride 32.
        return keras.layers.MaxPooling2D(2, strides=2, padding="same", name="pool9")(x)
