"""Interchangeable YOLOv2 feature extractors, registered by name."""

from backends import full_yolo, mobilenet, squeezenet, tiny_yolo  # noqa: F401  (registers them)
from backends.common import (
    BACKENDS,
    Backend,
    get_backend,
    load_backend_weights,
    save_backend_weights,
)

__all__ = [
    "BACKENDS",
    "Backend",
    "get_backend",
    "load_backend_weights",
    "save_backend_weights",
]
