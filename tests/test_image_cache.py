"""The decode-once cache: the same pixels as decoding, the same training batches, rebuilt when files change."""

import os
import time

import cv2
import numpy as np

import image_cache
from batches import BatchGenerator
from config import build_config, generator_args
from demo_data import write_split
from images import decode_image
from preprocessing import TargetLayout, parse_annotation

LABELS = ["ellipse", "rectangle", "triangle"]


def shapes(folder, count=6):
    write_split(str(folder), count, seed=4, size=(96, 128))
    instances, _ = parse_annotation(str(folder / "annotations"), str(folder / "images"), LABELS)
    return instances


def test_cached_pixels_are_the_decoded_pixels(tmp_path):
    instances = shapes(tmp_path / "data")
    png = tmp_path / "data" / "gray.png"
    cv2.imwrite(str(png), np.arange(50 * 70, dtype=np.uint16).reshape(50, 70) % 256)
    broken = tmp_path / "data" / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    paths = [i["filename"] for i in instances] + [str(png), str(broken)]
    cache = image_cache.open_cache(paths, str(tmp_path / "cache"), workers=2, progress=False)
    assert len(cache) == len(paths) and cache[str(broken)] is None
    for path in paths[:-1]:
        np.testing.assert_array_equal(cache[path], decode_image(path))
    assert cache.nbytes() == sum(decode_image(p).size for p in paths[:-1])


def test_training_batches_from_the_cache_equal_decoded_ones(tmp_path):
    instances = shapes(tmp_path / "data")
    layout = TargetLayout(LABELS, (64, 64), (2, 2), [1.0, 1.0, 2.0, 2.0], 6, 3)
    args = {**generator_args(build_config({}), "train"), "batch_size": 3, "workers": 1}
    cache = image_cache.open_cache([i["filename"] for i in instances], str(tmp_path / "cache"), progress=False)
    plain, cached = BatchGenerator(instances, layout, **args), BatchGenerator(instances, layout, **args, cache=cache)
    for index in range(len(plain)):  # augmentation on, same random draws
        (x1, y1), (x2, y2) = plain[index], cached[index]
        np.testing.assert_array_equal(x1["input_image"], x2["input_image"])
        np.testing.assert_array_equal(y1["grid"], y2["grid"])


def test_the_cache_is_reused_and_rebuilt_when_a_file_changes(tmp_path, monkeypatch):
    instances = shapes(tmp_path / "data", count=3)
    paths = [i["filename"] for i in instances]
    built = []
    original = image_cache.build_cache
    monkeypatch.setattr(image_cache, "build_cache", lambda *a, **k: built.append(a[1]) or original(*a, **k))
    first = image_cache.open_cache(paths, str(tmp_path / "cache"), progress=False)
    image_cache.open_cache(paths, str(tmp_path / "cache"), progress=False)
    assert len(built) == 1  # reused
    time.sleep(0.01)
    cv2.imwrite(paths[0], np.zeros((40, 30, 3), np.uint8))  # edited in place
    second = image_cache.open_cache(paths, str(tmp_path / "cache"), progress=False)
    assert len(built) == 2 and second.folder != first.folder and second[paths[0]].shape == (40, 30, 3)
    os.remove(os.path.join(second.folder, "index.json"))  # a build cut off before its index was written
    image_cache.open_cache(paths, str(tmp_path / "cache"), progress=False)
    assert len(built) == 3


def test_a_huge_image_is_stored_at_the_cap_and_its_boxes_still_fit(tmp_path, monkeypatch):
    monkeypatch.setattr(image_cache, "MAX_SIDE", 64)
    instances = shapes(tmp_path / "data", count=1)
    path = instances[0]["filename"]
    cache = image_cache.open_cache([path], str(tmp_path / "cache"), progress=False)
    assert max(cache[path].shape[:2]) == 64 and cache[path].shape[:2] == (48, 64)  # 96 x 128 kept its aspect
    layout = TargetLayout(LABELS, (64, 64), (2, 2), [1.0, 1.0], 6, 3)
    args = {**generator_args(build_config({}), "valid"), "batch_size": 1, "workers": 1}
    (_, full), (_, small) = (
        BatchGenerator(instances, layout, **args)[0],
        BatchGenerator(instances, layout, **args, cache=cache)[0],
    )
    np.testing.assert_allclose(small["grid"], full["grid"], atol=1e-5)  # boxes scale with the stored size


def test_evaluation_reads_the_cache_and_gets_the_decoded_detections(tmp_path, monkeypatch):
    import detections
    import evaluate
    from frontend import YOLO

    instances = shapes(tmp_path / "data", count=3)
    write_split(str(tmp_path / "big"), 1, seed=4, size=(192, 256))  # stored downscaled: decoded at full size
    big, _ = parse_annotation(str(tmp_path / "big" / "annotations"), str(tmp_path / "big" / "images"), LABELS)
    monkeypatch.setattr(image_cache, "MAX_SIDE", 150)
    cache = image_cache.open_cache([i["filename"] for i in instances + big], str(tmp_path / "cache"), progress=False)
    yolo = YOLO("MobileNet", 64, LABELS, 6, [1.0, 1.0, 2.0, 2.0], backend_options={"alpha": 0.25},
                load_pretrained=False)  # fmt: skip
    config = build_config({})
    _, decoded = evaluate.predict_instances(yolo, instances + big, config, progress=False)
    reads = []
    monkeypatch.setattr(image_cache, "decode_image", lambda path: reads.append(path) or decode_image(path))
    monkeypatch.setattr(detections, "decode_image", lambda path: 1 / 0)  # the plain path must not run
    _, cached = evaluate.predict_instances(yolo, instances + big, config, progress=False, cache=cache)
    assert reads == [big[0]["filename"]]  # only the downscaled image was decoded
    for (b1, s1, c1), (b2, s2, c2) in zip(decoded, cached):
        np.testing.assert_array_equal(b1, b2)
        np.testing.assert_array_equal(s1, s2)
        np.testing.assert_array_equal(c1, c2)
