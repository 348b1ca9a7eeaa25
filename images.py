"""Image files and arrays -> RGB uint8: gray replicated, alpha dropped, 16-bit scaled, each kind of
conversion announced once (what training, evaluation and prediction all read images through)."""

import os
import sys

import cv2
import numpy as np

from errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


class ImageError(UserError):
    """An image the user named that cannot be used."""


def decode_image(path):
    """-> RGB uint8 (H, W, 3), or None when the file is unreadable.

    OpenCV's colour decoding (which applies EXIF orientation) replicates gray into three channels,
    drops an alpha channel, as darknet's loader does, and keeps the top 8 bits of 16-bit pixels;
    PNG headers are read to say so once per kind.
    """
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        return None
    # headers are read until both notices were given
    if path.lower().endswith(".png") and not {"16-bit", "alpha"} <= _notices:
        _note_png_conversions(path)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_ALPHA_TYPES = (4, 6)  # IHDR colour types gray + alpha, RGB + alpha
_notices = set()


def notice_once(kind, message):
    """One line on stderr the first time a kind of conversion happens in this process: a dataset of
    thousands of RGBA files gets one line, not thousands."""
    if kind not in _notices:
        _notices.add(kind)
        print(f"Note: {message} (further such images are converted without a note)", file=sys.stderr, flush=True)


def _note_png_conversions(path):
    with open(path, "rb") as f:
        header = f.read(26)
    if len(header) < 26 or not header.startswith(PNG_SIGNATURE):
        return
    bit_depth, colour_type = header[24], header[25]
    if bit_depth == 16:
        notice_once("16-bit", f"{path} has 16-bit pixels; they are scaled to 8 bits (value / 256)")
    if colour_type in PNG_ALPHA_TYPES:
        notice_once("alpha", f"{path} has an alpha channel; it is dropped (transparent pixels keep their colour)")


def to_rgb_uint8(image, source="image"):
    """An image array as decode_image returns one: gray (H, W) or (H, W, 1) replicated, RGBA without
    alpha, 16-bit scaled to 8 bits (these two with a notice)."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ImageError(f"{source}: expected an RGB image (H, W, 3), got an array of shape {image.shape}")
    if image.shape[2] == 4:
        notice_once("alpha", f"{source} has an alpha channel; it is dropped (transparent pixels keep their colour)")
        image = image[..., :3]
    if image.dtype == np.uint16:
        notice_once("16-bit", f"{source} has 16-bit pixels; they are scaled to 8 bits (value / 256)")
        image = (image >> 8).astype(np.uint8)
    if image.dtype != np.uint8:
        raise ImageError(f"{source}: expected uint8 (0-255) or uint16 pixels, got {image.dtype}")
    return np.ascontiguousarray(image)


def to_channels(image, channels):
    """RGB (H, W, 3) -> what a detector with `channels` input channels takes: itself, or gray (H, W, 1)."""
    if channels == 3:
        return image
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None]


def read_rgb(image):
    """A file path or an array -> RGB uint8 (H, W, 3)."""
    if isinstance(image, str | os.PathLike):
        path = os.fspath(image)
        decoded = decode_image(path)
        if decoded is None:
            raise ImageError(f"Cannot read image {path}: missing or not an image file")
        return decoded
    return to_rgb_uint8(image)
