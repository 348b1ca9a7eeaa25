"""darknet's data augmentation (load_data_region): random crop / pad (scale, translation and aspect
change), resize, horizontal flip, HSV distortion; and the plain resize that validation and inference use.

Images are RGB uint8 (H, W, 3); boxes (N, 4) continuous pixel corners in, normalised 0..1 out.
"""

import cv2
import numpy as np

from images import to_channels


def _warp(image, boxes, matrix, out_hw):
    out_h, out_w = out_hw
    warped = cv2.warpAffine(image, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    corners = np.stack([boxes[:, [0, 1]], boxes[:, [2, 3]]], axis=1)  # (N, 2, 2)
    mapped = corners @ matrix[:, :2].T + matrix[:, 2]
    new = np.concatenate([mapped.min(axis=1), mapped.max(axis=1)], axis=1)
    new[:, [0, 2]] = np.clip(new[:, [0, 2]], 0, out_w) / out_w
    new[:, [1, 3]] = np.clip(new[:, [1, 3]], 0, out_h) / out_h
    return warped, new


def resize_for_network(image, boxes, out_hw):
    """Plain resize (validation, inference): -> image (out_h, out_w, 3), boxes normalised to 0..1."""
    h, w = image.shape[:2]
    matrix = np.array([[out_hw[1] / w, 0, 0], [0, out_hw[0] / h, 0]], np.float32)
    return _warp(image, boxes, matrix, out_hw)


def network_input(image, input_hw, channels):
    """An RGB image resized for the network exactly as validation images are (gray for channels=1)."""
    return to_channels(resize_for_network(image, np.zeros((0, 4), np.float32), input_hw)[0], channels)


def augment(image, boxes, out_hw, rng, jitter, flip, hue, saturation, exposure):
    """darknet's load_data_region: random crop/pad of up to `jitter` of each side (scale, translation
    and aspect change), resize, horizontal flip, then random_distort_image in HSV (the settings:
    config.augmentation_args).

    Returns the image and boxes normalised to 0..1; boxes squeezed below 0.1% of a side are dropped
    by the caller's keep mask.
    """
    h, w = image.shape[:2]
    dw, dh = jitter * w, jitter * h
    left, right = rng.uniform(-dw, dw, 2)
    top, bottom = rng.uniform(-dh, dh, 2)
    crop_w, crop_h = w - left - right, h - top - bottom
    sx, sy = out_hw[1] / crop_w, out_hw[0] / crop_h
    matrix = np.array([[sx, 0, -left * sx], [0, sy, -top * sy]], np.float32)
    if flip and rng.random() < 0.5:
        matrix = np.array([[-1, 0, out_hw[1]], [0, 1, 0]], np.float32) @ np.vstack([matrix, [0, 0, 1]])
    image, boxes = _warp(image, boxes, matrix.astype(np.float32), out_hw)
    image = distort_hsv(image, rng.uniform(-hue, hue), _rand_scale(rng, saturation), _rand_scale(rng, exposure))
    return image, boxes


def _rand_scale(rng, s):
    scale = rng.uniform(1, s)
    return scale if rng.random() < 0.5 else 1.0 / scale


def distort_hsv(image, dhue, dsat, dexp):
    """darknet's distort_image on 8-bit HSV: hue shifted by dhue (a fraction of the circle), S and V scaled.

    darknet works in float; this works on OpenCV's 8-bit full-circle HSV (256 hue steps), as ultralytics'
    augment_hsv does, because it was 53% of a training image's time in float32 and takes about half as long
    this way. The 8-bit rounding moves a pixel by 0.2 of a level on average against the float version
    (tests/test_preprocessing.py keeps that as the reference and bounds the difference).
    """
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV_FULL)
    cv2.transform(hsv, np.array([[1, 0, 0], [0, dsat, 0], [0, 0, dexp]], np.float32), dst=hsv)  # rounds, clips
    hue = hsv[..., 0]
    np.add(hue, np.uint8(round(dhue * 256) % 256), out=hue)  # uint8 wraps around the circle
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL, dst=hsv)
