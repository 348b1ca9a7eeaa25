"""Interchangeable YOLOv2 feature extractors, registered by name."""

from backends import applications, full_yolo, mobilenet, squeezenet, tiny_yolo  # noqa: F401  (registers them)
from backends.common import (
    BACKENDS,
    DETECTOR_VS_BACKEND,
    Backend,
    assign_by_name,
    conv_bn_leaky,
    get_backend,
    gray_first_layer,
    h5_layer_name,
    is_keras2_file,
    layers_with_weights,
    load_backend_weights,
    read_keras2_weights,
    save_backend_weights,
)

__all__ = [
    "BACKENDS",
    "DETECTOR_VS_BACKEND",
    "Backend",
    "assign_by_name",
    "conv_bn_leaky",
    "get_backend",
    "gray_first_layer",
    "h5_layer_name",
    "is_keras2_file",
    "layers_with_weights",
    "load_backend_weights",
    "read_keras2_weights",
    "save_backend_weights",
]
