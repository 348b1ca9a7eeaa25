"""VOC and COCO average precision against published figures, hand-worked cases and pycocotools."""

import numpy as np
import pytest

from evaluate import evaluate_detections
from metrics import average_precision, coco_average_precision, voc07_ap, voc_ap

# The worked example of rafaelpadilla/Object-Detection-Metrics (README and results/results.txt):
# 7 images, 15 people, 24 detections as x y w h; published at IoU 0.3: AP 24.57% all-point, 26.84% 11-point.
PADILLA_GT = {
    1: "25 16 38 56;129 123 41 62", 2: "123 11 43 55;38 132 59 45", 3: "16 14 35 48;123 30 49 44;99 139 47 47",
    4: "53 42 40 52;154 43 31 34", 5: "59 31 44 51;48 128 34 52", 6: "36 89 52 76;62 58 44 67",
    7: "28 31 55 63;58 67 50 58",
}  # fmt: skip
PADILLA_DETECTIONS = {
    1: ".88 5 67 31 48;.70 119 111 40 67;.80 124 9 49 67", 2: ".71 64 111 64 58;.54 26 140 60 47;.74 19 18 43 35",
    3: ".18 109 15 77 39;.67 86 63 46 45;.38 160 62 36 53;.91 105 131 47 47;.44 18 148 40 44",
    4: ".35 83 28 28 26;.78 28 68 42 67;.45 87 89 25 39;.14 10 155 60 26",
    5: ".62 50 38 28 46;.44 95 11 53 28;.95 29 131 72 29;.23 29 163 72 29",
    6: ".45 43 48 74 38;.84 17 155 29 35;.43 95 110 25 42", 7: ".48 16 20 101 88;.95 33 116 37 49",
}  # fmt: skip
PADILLA_PRECISION = [1.0, 0.5, 0.67, 0.5, 0.4, 0.33, 0.29, 0.25, 0.22, 0.3, 0.27, 0.33, 0.38, 0.43, 0.4, 0.38,
                     0.35, 0.33, 0.32, 0.3, 0.29, 0.27, 0.3, 0.29]  # fmt: skip
PADILLA_RECALL = [0.07, 0.07, 0.13, 0.13, 0.13, 0.13, 0.13, 0.13, 0.13, 0.2, 0.2, 0.27, 0.33, 0.4, 0.4, 0.4, 0.4,
                  0.4, 0.4, 0.4, 0.4, 0.4, 0.47, 0.47]  # fmt: skip


def _xywh_to_voc(x, y, w, h):
    return [x, y, x + w, y + h]


def test_published_worked_example_all_point_and_11_point():
    ground_truth = {}
    for image, boxes in PADILLA_GT.items():
        rows = [_xywh_to_voc(*map(float, b.split())) for b in boxes.split(";")]
        ground_truth[image] = (np.array(rows), np.zeros(len(rows), bool))
    detections = [
        (image, float(d.split()[0]), _xywh_to_voc(*map(float, d.split()[1:])))
        for image, dets in PADILLA_DETECTIONS.items()
        for d in dets.split(";")
    ]
    result = average_precision(detections, ground_truth, iou_threshold=0.3)
    assert result["ap"] == pytest.approx(0.2457, abs=5e-5)
    np.testing.assert_allclose(result["precision"], PADILLA_PRECISION, atol=0.005)
    np.testing.assert_allclose(result["recall"], PADILLA_RECALL, atol=0.005)
    assert average_precision(detections, ground_truth, 0.3, method="voc07")["ap"] == pytest.approx(0.2684, abs=5e-5)


def test_voc_ap_all_point_and_11_point_by_hand():
    recall, precision = np.array([0.5, 0.5, 0.5, 1.0]), np.array([1.0, 0.5, 1 / 3, 0.5])
    # envelope: precision 1 up to recall 0.5, then 0.5 up to recall 1
    assert voc_ap(recall, precision) == pytest.approx(0.75)
    # 11 points: recall 0, .1, ..., .5 reach precision 1; .6, ..., 1 reach 0.5
    assert voc07_ap(recall, precision) == pytest.approx((6 * 1 + 5 * 0.5) / 11)
    assert voc_ap(np.array([0.25, 0.5]), np.array([1.0, 1.0])) == pytest.approx(0.5)
    assert voc07_ap(np.array([0.25, 0.5]), np.array([1.0, 1.0])) == pytest.approx(6 / 11)


def test_average_precision_difficult_and_duplicates_like_the_devkit():
    ground_truth = {
        0: (np.array([[10, 10, 50, 50], [100, 100, 140, 140]], float), np.array([False, True])),
        1: (np.array([[10, 10, 50, 50]], float), np.array([False])),
    }
    detections = [
        (0, 0.9, [10, 10, 50, 50]),  # TP
        (0, 0.8, [12, 12, 50, 50]),  # duplicate of the same object: FP
        (0, 0.7, [100, 100, 140, 140]),  # on the difficult object: ignored
        (1, 0.6, [60, 60, 90, 90]),  # misses: FP
        (1, 0.5, [11, 11, 50, 50]),  # TP
    ]
    result = average_precision(detections, ground_truth)
    assert result["n_gt"] == 2
    assert result["ap"] == pytest.approx(0.75)  # TP FP FP TP: recall .5 at precision 1, recall 1 at .5
    assert average_precision(detections, ground_truth, method="voc07")["ap"] == pytest.approx(8.5 / 11)


def test_iou_counts_both_end_pixels_like_the_devkit():
    # VOC boxes 1..10 and 6..15 (10 pixels wide each): overlap 5 of 15 pixels -> 1/3, not 4/14.
    ground_truth = {0: (np.array([[1, 1, 10, 10]], float), np.array([False]))}
    assert average_precision([(0, 1.0, [6, 1, 15, 10])], ground_truth, iou_threshold=0.33)["ap"] == 1.0
    assert average_precision([(0, 1.0, [6, 1, 15, 10])], ground_truth, iou_threshold=0.34)["ap"] == 0.0


def random_dataset(rng, n_images=25, n_classes=3):
    """Objects with some difficult ones, detections near them (duplicates, misses, wrong places)."""
    ground_truth = {c: {} for c in range(n_classes)}
    detections = {c: [] for c in range(n_classes)}
    for image in range(n_images):
        for c in range(n_classes):
            n = rng.integers(0, 4)
            xy = rng.uniform(1, 300, (n, 2))
            boxes = np.concatenate([xy, xy + rng.uniform(8, 120, (n, 2))], axis=1)
            difficult = rng.random(n) < 0.15
            ground_truth[c][image] = (boxes, difficult)
            for box in boxes:
                for _ in range(rng.integers(0, 3)):  # 0, 1 or 2 detections (a duplicate) per object
                    w, h = box[2] - box[0], box[3] - box[1]
                    noisy = box + rng.normal(0, 0.12, 4) * [w, h, w, h]
                    detections[c].append((image, float(rng.random()), noisy))
            for _ in range(rng.integers(0, 3)):  # false positives anywhere
                xy = rng.uniform(1, 300, 2)
                detections[c].append((image, float(rng.random() * 0.7), np.r_[xy, xy + rng.uniform(8, 120, 2)]))
    return ground_truth, detections


def pycocotools_stats(ground_truth, detections):
    """COCOeval on the same data: VOC pixel boxes -> COCO [x, y, w, h] (x = xmin - 1, w = xmax - xmin + 1);
    difficult objects -> iscrowd."""
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(b):
        return [float(b[0]) - 1, float(b[1]) - 1, float(b[2] - b[0]) + 1, float(b[3] - b[1]) + 1]

    images = sorted({i for per_class in ground_truth.values() for i in per_class})
    annotations = []
    for c, per_class in ground_truth.items():
        for image, (boxes, difficult) in per_class.items():
            for box, crowd in zip(boxes, difficult):
                bb = xywh(box)
                annotations.append({"id": len(annotations) + 1, "image_id": image, "category_id": c, "bbox": bb,
                                    "area": bb[2] * bb[3], "iscrowd": int(crowd)})  # fmt: skip
    coco = COCO()
    coco.dataset = {"images": [{"id": i} for i in images], "annotations": annotations,
                    "categories": [{"id": c} for c in ground_truth]}  # fmt: skip
    coco.createIndex()
    results = [{"image_id": i, "category_id": c, "bbox": xywh(b), "score": s}
               for c, dets in detections.items() for i, s, b in dets]  # fmt: skip
    evaluator = COCOeval(coco, coco.loadRes(results), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return evaluator.stats[:3]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coco_map_equals_pycocotools(seed):
    ground_truth, detections = random_dataset(np.random.default_rng(seed))
    ap = np.array([coco_average_precision(detections[c], ground_truth[c]) for c in ground_truth])
    ours = [ap.mean(), ap[:, 0].mean(), ap[:, 5].mean()]
    reference = pycocotools_stats(ground_truth, detections)
    assert 0.1 < ours[0] < ours[1] < 0.95  # a non-trivial case
    np.testing.assert_allclose(ours, reference, atol=1e-12)


def test_coco_limits_detections_per_image():
    ground_truth = {0: (np.array([[1, 1, 10, 10]], float), np.array([False]))}
    misses = [(0, 0.9, [50, 50, 60, 60])] * 3
    hit = [(0, 0.5, [1, 1, 10, 10])]
    assert coco_average_precision(misses + hit, ground_truth)[0] == pytest.approx(0.25, abs=0.01)
    assert coco_average_precision(misses + hit, ground_truth, max_dets=3)[0] == 0.0


def test_evaluate_detections_per_class_and_mean():
    instances = [
        {"object": [{"name": "a", "difficult": False, "xmin": 11, "ymin": 11, "xmax": 50, "ymax": 50},
                    {"name": "b", "difficult": False, "xmin": 61, "ymin": 61, "xmax": 90, "ymax": 90}]},
    ]  # fmt: skip
    # perfect "a", "b" found only as a wrong-class box
    dets = [(np.array([[10, 10, 50, 50], [60, 60, 90, 90]], np.float32), np.array([0.9, 0.8]), np.array([0, 0]))]
    results = evaluate_detections(instances, dets, ["a", "b", "c"], "voc", 0.5)
    assert results["classes"]["a"]["ap"] == pytest.approx(1.0)
    assert results["classes"]["b"]["ap"] == pytest.approx(0.0)
    assert results["classes"]["c"]["n_gt"] == 0
    assert results["map"] == pytest.approx(0.5)  # classes without ground truth are left out
    assert results["classes"]["a"]["precision_at_threshold"] == pytest.approx(0.5)
    assert results["coco"]["ap50"] == pytest.approx(0.5)  # the "a" box is exact: AP 1 at every IoU
    assert results["coco"]["map"] == pytest.approx(0.5)
