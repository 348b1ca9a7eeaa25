"""MobileNet v1 from keras.applications (its own layer names, so its weight files load)."""

import keras

from backends.common import Backend, register_backend


@register_backend("MobileNet")
class MobileNet(Backend):
    weights_file = "mobilenet_backend.h5"
    scale = 1.0 / 127.5
    offset = -1.0

    def __init__(self, alpha=1.0):
        self.alpha = alpha

    def features(self, x):
        net = keras.applications.MobileNet(
            input_shape=tuple(x.shape[1:]), alpha=self.alpha, include_top=False, weights=None
        )
        return net(x)
