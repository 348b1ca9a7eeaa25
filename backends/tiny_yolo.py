"""Tiny YOLO: darknet's yolov2-tiny-voc.cfg / yolov2-tiny.cfg body (conv_1..conv_8)."""

from backends.common import Backend, conv_bn_leaky, maxpool, register_backend


@register_backend("Tiny Yolo")
class TinyYolo(Backend):
    weights_file = "tiny_yolo_backend.h5"
    ends_in_detection_layers = True

    def __init__(self, final_filters=1024):
        # yolov2-tiny-voc ends in 1024 filters, yolov2-tiny (COCO) in 512
        self.final_filters = final_filters

    def features(self, x):
        for index, filters in enumerate([16, 32, 64, 128, 256], start=1):
            x = maxpool(conv_bn_leaky(x, filters, 3, index))
        # darknet's 6th max-pool has stride 1: 'same' padding pads right/bottom
        # only, exactly as darknet's maxpool (pad = size - 1, offset -pad/2 = 0).
        x = maxpool(conv_bn_leaky(x, 512, 3, 6), stride=1)
        x = conv_bn_leaky(x, 1024, 3, 7)
        return conv_bn_leaky(x, self.final_filters, 3, 8)
