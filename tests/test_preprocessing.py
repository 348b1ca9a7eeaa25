"""VOC parsing (good and broken files), augmentation geometry, target encoding by hand."""

import os
import shutil

import cv2
import numpy as np
import pytest
from conftest import shared_path

from augmentation import augment, resize_for_network
from batches import BatchGenerator
from config import augmentation_args, build_config, generator_args
from datasets import check_label_counts
from errors import UserError
from preprocessing import ParseReport, TargetLayout, best_anchor, encode_targets, parse_annotation

DEFAULTS = build_config({})
DOG_LAYOUT = TargetLayout(labels=["dog"], input_hw=(64, 64), grid_hw=(2, 2), anchors=[1, 1], max_box_per_image=3,
                          channels=3)  # fmt: skip


def training_batches(instances, batch_size, split="train"):
    """The config's training (or validation) generator for 64x64 one-class inputs."""
    return BatchGenerator(instances, DOG_LAYOUT, **{**generator_args(DEFAULTS, split), "batch_size": batch_size})


XML = """<annotation><filename>{name}</filename><size><width>{w}</width><height>{h}</height><depth>3</depth></size>
{objects}</annotation>"""
OBJ = "<object><name>{label}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"


def write_pair(folder, name, objects, size=(100, 80), image=True):
    os.makedirs(folder / "ann", exist_ok=True)
    os.makedirs(folder / "img", exist_ok=True)
    objs = "".join(OBJ.format(label=label, d=int(d), b=b) for label, b, d in objects)
    (folder / "ann" / f"{name}.xml").write_text(XML.format(name=f"{name}.jpg", w=size[0], h=size[1], objects=objs))
    if image:
        cv2.imwrite(str(folder / "img" / f"{name}.jpg"), np.full((size[1], size[0], 3), 128, np.uint8))


def test_parser_handles_bad_files_and_counts_them(tmp_path):
    write_pair(tmp_path, "good", [("dog", (10, 10, 50, 40), False), ("cat", (5, 5, 20, 20), False)])
    write_pair(tmp_path, "outside", [("dog", (-5, 10, 150, 40), False)])  # clipped to the image
    write_pair(tmp_path, "empty", [("dog", (30, 30, 30, 50), False)])  # zero width -> dropped, image has no object
    write_pair(tmp_path, "difficult", [("dog", (10, 10, 30, 30), True)])
    write_pair(tmp_path, "noimage", [("dog", (10, 10, 30, 30), False)], image=False)
    (tmp_path / "ann" / "broken.xml").write_text("<annotation><filename>x.jpg</filename")
    report = ParseReport()
    instances, seen = parse_annotation(str(tmp_path / "ann"), str(tmp_path / "img"), ["dog"], report=report)

    names = sorted(os.path.basename(i["filename"]) for i in instances)
    assert names == ["difficult.jpg", "good.jpg", "outside.jpg"]
    assert seen == {"dog": 3}
    outside = next(i for i in instances if i["filename"].endswith("outside.jpg"))
    assert (outside["object"][0]["xmin"], outside["object"][0]["xmax"]) == (1, 100)
    assert report.clipped_boxes == 1 and report.dropped_boxes == 1 and report.difficult == 1
    assert report.unknown_labels == {"cat": 1}
    skipped = dict(report.skipped_files)
    assert "unreadable XML" in skipped[str(tmp_path / "ann" / "broken.xml")]
    assert "not found" in skipped[str(tmp_path / "ann" / "noimage.xml")]
    assert "broken.xml" in report.summary() and "clipped" in report.summary()


def test_label_without_annotations_lists_counts():
    with pytest.raises(UserError) as err:
        check_label_counts(["dog", "cat"], {"dog": 12}, "training set")
    assert "['cat']" in str(err.value) and "dog 12" in str(err.value) and "cat 0" in str(err.value)


def test_encode_targets_by_hand():
    anchors = [1.0, 1.0, 3.0, 2.0]
    # A box centred at (0.55, 0.3) of a 4x4 grid, 0.75 x 0.5 of the image -> cell (i=2, j=1),
    # 3 x 2 grid units: anchor 1 matches exactly.
    boxes = np.array([[0.175, 0.05, 0.925, 0.55], [0.0, 0.0, 0.25, 0.25]], np.float32)
    y, true_boxes = encode_targets(boxes, [1, 0], (4, 4), anchors, 2, 3)
    assert y.shape == (4, 4, 2, 7)
    np.testing.assert_allclose(y[1, 2, 1], [2.2, 1.2, 3.0, 2.0, 1, 0, 1], rtol=1e-6)
    np.testing.assert_allclose(y[0, 0, 0], [0.5, 0.5, 1.0, 1.0, 1, 1, 0], rtol=1e-6)
    assert y[..., 4].sum() == 2
    np.testing.assert_allclose(true_boxes, [[2.2, 1.2, 3, 2], [0.5, 0.5, 1, 1], [0, 0, 0, 0]], rtol=1e-6)


def reference_encode_targets(boxes, class_ids, grid_hw, anchors, nb_class, max_box_per_image):
    """encode_targets as first written, one box at a time: the reference for the vectorised one."""
    grid_h, grid_w = grid_hw
    y_grid = np.zeros((grid_h, grid_w, len(anchors) // 2, 4 + 1 + nb_class), np.float32)
    true_boxes = np.zeros((max_box_per_image, 4), np.float32)
    for k, (box, cls) in enumerate(zip(boxes, class_ids)):
        cx, cy = (box[0] + box[2]) / 2 * grid_w, (box[1] + box[3]) / 2 * grid_h
        bw, bh = (box[2] - box[0]) * grid_w, (box[3] - box[1]) * grid_h
        i, j = min(int(cx), grid_w - 1), min(int(cy), grid_h - 1)
        a = best_anchor(bw, bh, anchors)
        y_grid[j, i, a] = 0
        y_grid[j, i, a, 0:5] = cx, cy, bw, bh, 1.0
        y_grid[j, i, a, 5 + cls] = 1.0
        if k < max_box_per_image:
            true_boxes[k] = cx, cy, bw, bh
    return y_grid, true_boxes


def test_encode_targets_equals_the_one_box_at_a_time_version():
    rng = np.random.default_rng(2)
    anchors = [0.6, 0.6, 0.87, 1.6, 1.6, 0.87, 4.0, 3.0]
    for k in range(200):
        n = int(rng.integers(0, 40))
        corners = rng.uniform(0, 1, (n, 2, 2)).astype(np.float32)
        if k % 4 == 0:  # crowded: many boxes share cells and anchors, so later ones must replace earlier ones
            corners = (corners * 0.2 + 0.4).astype(np.float32)
        boxes = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)
        boxes[: n // 5, 2:] = 1.0  # boxes touching the far edges land in the last cell
        classes = rng.integers(0, 3, n).tolist()
        grid = (int(rng.integers(1, 20)), int(rng.integers(1, 20)))
        for got, want in zip(encode_targets(boxes, classes, grid, anchors, 3, 10),
                             reference_encode_targets(boxes, classes, grid, anchors, 3, 10)):  # fmt: skip
            np.testing.assert_array_equal(got, want)


def test_best_anchor_is_shape_iou_not_area():
    # 2x2 box: anchor (1.9, 4) has IoU 3.8 / 7.6 = 0.5; anchor (1.5, 1.5) has 2.25 / 4 = 0.5625.
    assert best_anchor(2.0, 2.0, [1.9, 4.0, 1.5, 1.5]) == 1


def white_box_image(box, size=(120, 160)):
    image = np.zeros((*size, 3), np.uint8)
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = 255
    return image


def bright_region(image):
    ys, xs = np.nonzero(image[..., 0] > 127)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


@pytest.mark.parametrize("seed", range(6))
def test_augmented_boxes_follow_the_pixels(seed):
    box = (40, 30, 100, 90)
    image = white_box_image(box)
    rng = np.random.default_rng(seed)
    settings = {**augmentation_args(DEFAULTS), "jitter": 0.2, "hue": 0, "saturation": 1, "exposure": 1}
    out, boxes = augment(image, np.array([box], np.float32), (96, 128), rng, **settings)
    assert out.shape == (96, 128, 3) and out.dtype == np.uint8
    expected = bright_region(out) / [128, 96, 128, 96]
    np.testing.assert_allclose(boxes[0], expected, atol=2.5 / 96)


def test_flip_happens_and_moves_box():
    image = white_box_image((10, 10, 40, 60))
    flipped = 0
    for seed in range(20):
        _, boxes = augment(image, np.array([[10, 10, 40, 60]], np.float32), (120, 160), np.random.default_rng(seed),
                           jitter=0.0, flip=True, hue=0, saturation=1, exposure=1)  # fmt: skip
        flipped += boxes[0, 0] > 0.5
    assert 3 < flipped < 17


def reference_distort_hsv(image, dhue, dsat, dexp):
    """distort_hsv as first written (darknet's distort_image in float32, plainly): the reference."""
    hsv = cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0] + dhue * 360.0) % 360.0
    hsv[..., 1] = np.clip(hsv[..., 1] * dsat, 0, 1)
    hsv[..., 2] = np.clip(hsv[..., 2] * dexp, 0, 1)
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


def test_distort_hsv_stays_within_8_bit_rounding_of_darknets_float_version():
    """distort_hsv works on 8-bit HSV (256 hue steps); the float32 reference is darknet's. At full saturation one hue
    step is 6 levels of a channel (6 x 256 levels round the circle), so two steps and S/V rounding bound a pixel's
    difference; on average it is about a level (measured here: mean 0.78, worst image 1.87, max 12)."""
    from augmentation import distort_hsv

    def difference(image, draws):
        return np.abs(distort_hsv(image, *draws).astype(int) - reference_distort_hsv(image, *draws))

    rng = np.random.default_rng(5)
    means = []
    for k in range(60):
        image = rng.integers(0, 256, (int(rng.integers(1, 90)), int(rng.integers(1, 90)), 3), dtype=np.uint8)
        if k % 3 == 0:  # saturated and gray pixels, where the clipping and the hue wrap matter
            image[::2] = rng.choice([0, 255], size=image[::2].shape).astype(np.uint8)
            image[1::4] = image[1::4, :, :1]
        draws = (float(rng.uniform(-0.5, 0.5)), float(rng.uniform(1 / 3, 3)), float(rng.uniform(1 / 3, 3)))
        diff = difference(image, draws)
        means.append(diff.mean())
        assert diff.mean() <= 2.5 and diff.max() <= 16, (draws, diff.mean(), diff.max())
    assert np.mean(means) <= 1.0, np.mean(means)
    image = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    for draws in ((0.5, 1.0, 1.0), (-0.5, 1.0, 1.0), (0.0, 10.0, 10.0), (0.1, 0.0, 0.0)):  # both wraps, clips, zero
        assert difference(image, draws).max() <= 16, draws
    primaries = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]]], np.uint8)
    for dhue in (1 / 3, -1 / 3, 1 / 6):  # red -> green -> blue -> red round the circle, and the wrap backwards
        assert difference(primaries, (dhue, 1.0, 1.0)).max() <= 9, dhue


def test_resize_maps_boxes_for_any_aspect():
    image = white_box_image((40, 30, 100, 90), size=(120, 160))
    out, boxes = resize_for_network(image, np.array([[40, 30, 100, 90]], np.float32), (64, 64))
    np.testing.assert_allclose(boxes[0], [40 / 160, 30 / 120, 100 / 160, 90 / 120], atol=1e-6)
    assert out.shape == (64, 64, 3)


def test_generator_skips_unreadable_images(tmp_path):
    write_pair(tmp_path, "a", [("dog", (10, 10, 50, 40), False)])
    write_pair(tmp_path, "b", [("dog", (10, 10, 50, 40), False)])
    instances, _ = parse_annotation(str(tmp_path / "ann"), str(tmp_path / "img"), ["dog"])
    (tmp_path / "img" / "b.jpg").write_bytes(b"not a jpeg")
    gen = training_batches(instances, 4)
    with pytest.warns(UserWarning, match="Unreadable image skipped: .*b.jpg"):
        x, y = gen[0]
    assert x["input_image"].shape == (4, 64, 64, 3) and x["input_image"].dtype == np.uint8
    assert y["grid"][..., 4].sum() == 4  # every slot got the readable image's box
    assert len(gen.bad_images) == 1


def test_generator_counts_seen_images_across_epochs(tmp_path):
    for name in "abc":
        write_pair(tmp_path, name, [("dog", (10, 10, 50, 40), False)])
    instances, _ = parse_annotation(str(tmp_path / "ann"), str(tmp_path / "img"), ["dog"])
    gen = training_batches(instances, 2)
    assert len(gen) == 2 and gen[1][1]["seen"][0] == 2
    gen.set_epoch(1)
    assert gen[1][1]["seen"][0] == 6
    # validation batches never count as early training: no warm-up term in val_loss
    assert training_batches(instances, 2, "valid")[0][1]["seen"][0] > 1e30


@pytest.mark.parametrize("dataset, labels", [("raccoon", ["raccoon"]), ("bccd", ["RBC", "WBC", "Platelets"])])
def test_parser_on_real_datasets(dataset, labels):
    root = shared_path("data", dataset)
    if root is None:
        pytest.skip(f"../shared/data/{dataset} is not present")
    report = ParseReport()
    instances, seen = parse_annotation(
        os.path.join(root, "annotations"), os.path.join(root, "images"), labels, report=report
    )
    assert len(instances) > 100
    assert set(seen) == set(labels)
    for instance in instances[:50]:
        image = cv2.imread(instance["filename"])
        assert image.shape[:2] == (instance["height"], instance["width"])
        for obj in instance["object"]:
            assert 1 <= obj["xmin"] < obj["xmax"] <= instance["width"]
            assert 1 <= obj["ymin"] < obj["ymax"] <= instance["height"]


def test_parser_on_voc_sample_with_difficult():
    root = shared_path("data", "voc-sample")
    if root is None:
        pytest.skip("../shared/data/voc-sample is not present")
    from config import VOC_LABELS

    report = ParseReport()
    instances, seen = parse_annotation(
        os.path.join(root, "annotations"), os.path.join(root, "images"), VOC_LABELS, report=report
    )
    assert len(instances) == 107 and sum(seen.values()) == 285 and seen["person"] == 91
    assert report.difficult > 0 and not report.skipped_files


def test_parser_tolerates_copy_without_images(tmp_path):
    root = shared_path("data", "raccoon")
    if root is None:
        pytest.skip("../shared/data/raccoon is not present")
    ann = tmp_path / "ann"
    ann.mkdir()
    for name in sorted(os.listdir(os.path.join(root, "annotations")))[:3]:
        shutil.copy(os.path.join(root, "annotations", name), ann)
    report = ParseReport()
    instances, _ = parse_annotation(str(ann), str(tmp_path), ["raccoon"], report=report)
    assert instances == [] and len(report.skipped_files) == 3
