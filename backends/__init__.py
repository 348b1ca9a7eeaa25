"""Interchangeable YOLOv2 feature extractors, registered by name."""

from backends import applications, full_yolo, mobilenet, squeezenet, tiny_yolo  # noqa: F401  (registers them)
from backends.common import (
    BACKENDS,
    Backend,
    BackendError,
    assign_by_name,
    check_stride,
    conv_bn_leaky,
    get_backend,
    gray_first_layer,
    layers_with_weights,
)
from backends.freezing import freeze_layers, unfreeze_keeping_batchnorm

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendError",
    "assign_by_name",
    "check_stride",
    "conv_bn_leaky",
    "freeze_layers",
    "get_backend",
    "gray_first_layer",
    "layers_with_weights",
    "unfreeze_keeping_batchnorm",
]
