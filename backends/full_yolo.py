"""Full YOLO: darknet's yolov2-voc.cfg body, Darknet-19 with the passthrough (reorg) branch."""

import keras

from backends.common import Backend, conv_bn_leaky, maxpool, register_backend
from custom_layers import Reorg

# (filters, kernel) per conv of each stage; a max-pool follows every stage but the last.
DARKNET19_STAGES = [
    [(32, 3)],
    [(64, 3)],
    [(128, 3), (64, 1), (128, 3)],
    [(256, 3), (128, 1), (256, 3)],
    [(512, 3), (256, 1), (512, 3), (256, 1), (512, 3)],
    [(1024, 3), (512, 1), (1024, 3), (512, 1), (1024, 3)],
]


@register_backend("Full Yolo")
class FullYolo(Backend):
    weights_file = "full_yolo_backend.h5"
    ends_in_detection_layers = True

    def __init__(self, passthrough="darknet"):
        self.passthrough = passthrough

    def features(self, x):
        index = 1
        for stage, convs in enumerate(DARKNET19_STAGES):
            for filters, size in convs:
                x = conv_bn_leaky(x, filters, size, index)
                index += 1
            if stage == 4:
                skip = x  # 26x26x512 at 416, the passthrough's source
            if stage < len(DARKNET19_STAGES) - 1:
                x = maxpool(x)
        x = conv_bn_leaky(x, 1024, 3, 19)
        x = conv_bn_leaky(x, 1024, 3, 20)
        skip = conv_bn_leaky(skip, 64, 1, 21)
        skip = Reorg(mode=self.passthrough, name="reorg")(skip)
        x = keras.layers.Concatenate()([skip, x])
        return conv_bn_leaky(x, 1024, 3, 22)
