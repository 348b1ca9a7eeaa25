"""Image files and arrays -> RGB uint8: gray replicated, alpha dropped, 16-bit scaled, each kind of
conversion announced once (what training, evaluation and prediction all read images through)."""

import os
import stat
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
    PNG headers are read to say so once per kind. The bytes are read by Python and decoded from memory:
    cv2.imread crashes the process on a file name that is not valid UTF-8 (a Latin-1 name on Linux).
    """
    data = read_image_file(path)
    if data is None:
        return None
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return None
    if data[:2] == JPEG_START and data.rstrip(b"\0")[-2:] != JPEG_END:
        notice_file(path, "is truncated (no JPEG end marker): its missing part decodes grey")
    # headers are read until both notices were given
    if data.startswith(PNG_SIGNATURE) and not {"16-bit", "alpha"} <= _notices:
        _note_png_conversions(path, data[:26])
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


NOT_REGULAR = "is not a regular file (a FIFO, device or folder)"


def is_regular_file(path):
    """Raises OSError when `path` cannot be statted. A FIFO or a device would block or never end when read."""
    return stat.S_ISREG(os.stat(path).st_mode)


def read_image_file(path):
    """The file's bytes, or None (with a notice) for what is not a readable regular file: a FIFO or a device
    would block or never end."""
    try:
        if not is_regular_file(path):
            notice_file(path, f"{NOT_REGULAR}: skipped")
            return None
        with open(path, "rb") as f:
            return f.read() or None
    except OSError:
        return None


def write_image(path, rgb):
    """Writes an RGB uint8 image (the format from the name's extension), for any file name the system allows."""
    ok, encoded = cv2.imencode(os.path.splitext(path)[1] or ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ImageError(f"cannot encode an image for {printable(path)}")
    with open(path, "wb") as f:
        f.write(encoded.tobytes())
    return path


def printable(path):
    """A file name as text a terminal can show: bytes that are not UTF-8 as \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"
_noticed_files = set()


def notice_file(path, problem):
    """One line on stderr per file and problem (an epoch re-reads every image)."""
    if (path, problem) not in _noticed_files:
        _noticed_files.add((path, problem))
        print(f"Note: {printable(path)} {problem}", file=sys.stderr, flush=True)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_ALPHA_TYPES = (4, 6)  # IHDR colour types gray + alpha, RGB + alpha
_notices = set()


def notice_once(kind, message):
    """One line on stderr the first time a kind of conversion happens in this process: a dataset of
    thousands of RGBA files gets one line, not thousands."""
    if kind not in _notices:
        _notices.add(kind)
        print(f"Note: {message} (further such images are converted without a note)", file=sys.stderr, flush=True)


def _note_png_conversions(path, header):
    if len(header) < 26 or not header.startswith(PNG_SIGNATURE):
        return
    bit_depth, colour_type = header[24], header[25]
    if bit_depth == 16:
        notice_once("16-bit", f"{printable(path)} has 16-bit pixels; they are scaled to 8 bits (value / 256)")
    if colour_type in PNG_ALPHA_TYPES:
        notice_once(
            "alpha", f"{printable(path)} has an alpha channel; it is dropped (transparent pixels keep their colour)"
        )


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
