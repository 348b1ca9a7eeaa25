"""Decode-once image cache: every image of a dataset decoded once into one uint8 file that later epochs and
later runs read through a memory map, so training does no JPEG decoding after the first pass.

<cache_dir>/<key>/pixels.u8 holds the RGB pixels back to back, index.json the offset and shape of each
file. The key is a hash of every file's path, size and modification time and of the cache settings, so an
edited, added or removed image (or another setting) gives a new cache instead of stale pixels. Images are
stored as decode_image returns them (bit-identical), unless their longer side exceeds MAX_SIDE; those are
downscaled to it (phone photos), which the box scaling in BatchGenerator already accounts for.
"""

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
from tqdm import tqdm

from images import decode_image

MAX_SIDE = 1024
FORMAT = 1  # bump when the layout changes: old caches are then rebuilt


class ImageCache:
    """cache[path] -> the RGB uint8 image (a read-only view into the memory map), or None if unreadable."""

    def __init__(self, folder):
        with open(os.path.join(folder, "index.json")) as f:
            index = json.load(f)
        self.folder = folder
        self.entries = {path: (offset, tuple(shape)) for path, offset, shape in index["images"]}
        size = index["bytes"]
        self.pixels = np.memmap(os.path.join(folder, "pixels.u8"), np.uint8, "r", shape=(size,)) if size else None

    def __reduce__(self):
        """Pickled as its folder (loader processes open the memory map themselves), never as its pixels."""
        return ImageCache, (self.folder,)

    def __contains__(self, path):
        return path in self.entries

    def __getitem__(self, path):
        offset, shape = self.entries[path]
        if not shape[0]:
            return None
        return self.pixels[offset : offset + int(np.prod(shape))].reshape(shape)

    def __len__(self):
        return len(self.entries)

    def read(self, path):
        """The image at `path` exactly as decode_image returns it (detections are in its pixels): from the
        cache, decoded only when it is not cached or may have been stored downscaled."""
        image = self[path] if path in self.entries else decode_image(path)
        return decode_image(path) if image is not None and max(image.shape[:2]) >= MAX_SIDE else image

    def unreadable(self):
        """The paths that did not decode when the cache was built."""
        return {path for path, (_, shape) in self.entries.items() if not shape[0]}

    def nbytes(self):
        return 0 if self.pixels is None else self.pixels.size


def cache_key(paths):
    """Changes whenever a file is edited, added or removed, or the cache's settings change."""
    return fingerprint(paths, {"format": FORMAT, "max_side": MAX_SIDE})


def fingerprint(paths, settings):
    """A hash of every file's path, size and modification time, and of `settings` (parse_cache uses it too)."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for path in sorted(paths):
        stat = os.stat(path) if os.path.exists(path) else None
        h.update(f"{path}\0{stat and stat.st_size}\0{stat and stat.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def open_cache(paths, cache_dir, workers=2, progress=True):
    """The cache of `paths` under `cache_dir`, built first (decoding in `workers` threads) if it is missing
    or stale."""
    paths = sorted(set(paths))
    folder = os.path.join(cache_dir, cache_key(paths))
    if not os.path.exists(os.path.join(folder, "index.json")):
        build_cache(paths, folder, workers, progress)
    return ImageCache(folder)


def _decode_for_cache(path):
    image = decode_image(path)
    if image is not None and max(image.shape[:2]) > MAX_SIDE:
        scale = MAX_SIDE / max(image.shape[:2])
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return image


def build_cache(paths, folder, workers=2, progress=True):
    """Decodes `paths` in parallel and appends the pixels in order; the index is written last, so a cut-off
    build is never taken for a finished one."""
    from weight_files import atomic_write  # here: weight_files imports Keras, which loader processes do without

    os.makedirs(folder, exist_ok=True)
    images, offset = [], 0
    with (
        atomic_write(os.path.join(folder, "pixels.u8")) as tmp,
        open(tmp, "wb") as f,
        ThreadPoolExecutor(workers) as pool,
    ):
        bar = tqdm(total=len(paths), desc="decode once (image cache)", unit="img", disable=None if progress else True)
        for start in range(0, len(paths), 64):  # bounded: 64 decoded images in memory at a time
            chunk = paths[start : start + 64]
            for path, image in zip(chunk, pool.map(_decode_for_cache, chunk)):
                shape = (0, 0, 3) if image is None else image.shape
                images.append((path, offset, list(shape)))
                if image is not None:
                    f.write(np.ascontiguousarray(image).tobytes())
                    offset += image.size
                bar.update()
        bar.close()
    with atomic_write(os.path.join(folder, "index.json")) as tmp, open(tmp, "w") as f:
        json.dump({"format": FORMAT, "bytes": offset, "images": images}, f)
    return folder
