"""The confusion matrix on hand-built images whose every cell is counted by hand."""

import numpy as np
import pytest

from confusion import confusion_matrix, confusion_summary, match_pairs, plot_confusion_matrix
from utils import voc_to_corners

LABELS = ["cat", "dog"]
CAT, DOG, BACKGROUND = 0, 1, 2


def obj(name, box, difficult=False):
    return {"name": name, "xmin": box[0], "ymin": box[1], "xmax": box[2], "ymax": box[3], "difficult": difficult}


def dets(*rows):
    """(VOC box, score, class id) rows -> the (boxes in continuous corners, scores, class ids) evaluate uses."""
    boxes = voc_to_corners([r[0] for r in rows]) if rows else np.zeros((0, 4))
    return boxes, np.array([r[1] for r in rows], np.float64), np.array([r[2] for r in rows], np.int64)


A, B, C = (11, 11, 50, 50), (101, 101, 150, 150), (201, 11, 260, 70)


def test_each_kind_of_outcome_lands_in_its_cell():
    instances = [
        {"object": [obj("cat", A), obj("dog", B), obj("dog", C)]},
        {"object": [obj("cat", A, difficult=True), obj("cat", B, difficult=True)]},
    ]
    detections = [
        # image 0: A right, B (a dog) called a cat, a dog box on nothing, and C found only below the threshold
        dets((A, 0.9, CAT), (B, 0.8, CAT), ((301, 301, 340, 340), 0.7, DOG), (C, 0.1, DOG)),
        # image 1: a detection on a difficult object counts nowhere; the other difficult one is not a miss
        dets((A, 0.9, DOG)),
    ]
    counts = confusion_matrix(instances, detections, LABELS, score_threshold=0.3)
    expected = np.zeros((3, 3), np.int64)
    expected[CAT, CAT] = 1  # A found as cat
    expected[CAT, DOG] = 1  # B, a dog, detected as a cat
    expected[BACKGROUND, DOG] = 1  # C, its only detection below the threshold
    expected[DOG, BACKGROUND] = 1  # a dog where there is nothing
    np.testing.assert_array_equal(counts, expected)
    assert counts[:, :2].sum() == 3  # every non-difficult object is counted once


def test_pairing_ignores_classes_and_needs_iou_above_the_threshold():
    # (11..50)^2 against (31..70)x(11..50): 20 of 40 columns shared -> IoU 20*40 / (2*1600 - 800) = 1/3
    half = (31, 11, 70, 50)
    instances = [{"object": [obj("cat", A)]}]
    counts = confusion_matrix(instances, [dets((half, 0.9, DOG))], LABELS, 0.3, iou_threshold=1 / 3)
    np.testing.assert_array_equal(counts[[BACKGROUND, DOG], [CAT, BACKGROUND]], [1, 1])  # not above 1/3: no pair
    counts = confusion_matrix(instances, [dets((half, 0.9, DOG))], LABELS, 0.3, iou_threshold=0.3)
    assert counts[DOG, CAT] == 1 and counts.sum() == 1


def test_two_detections_of_one_object_leave_one_over():
    instances = [{"object": [obj("dog", B)]}]
    counts = confusion_matrix(instances, [dets((B, 0.9, DOG), ((102, 101, 150, 150), 0.8, DOG))], LABELS, 0.3)
    assert counts[DOG, DOG] == 1 and counts[DOG, BACKGROUND] == 1 and counts.sum() == 2


def test_greedy_pairing_gives_a_detection_its_second_best_object():
    # detection 0 overlaps object 0 by 0.9 and object 1 by 0.85; detection 1 overlaps object 0 by 0.95.
    ious = np.array([[0.9, 0.85], [0.95, 0.0]])
    assert match_pairs(ious, 0.5) == [(1, 0), (0, 1)]
    assert match_pairs(np.zeros((0, 3)), 0.5) == []


def test_summary_and_image(tmp_path):
    counts = np.array([[3, 1, 2], [0, 4, 0], [1, 0, 0]])
    summary = confusion_summary(counts, LABELS, 0.3)
    assert summary["labels"] == ["cat", "dog", "background"] and summary["counts"][0] == [3, 1, 2]
    path = plot_confusion_matrix(counts, LABELS, 0.3, str(tmp_path / "confusion_matrix.png"))
    import cv2

    image = cv2.imread(path)
    assert image is not None and image.shape[0] > 200
    assert image.std() > 10  # drawn cells, not a blank canvas


@pytest.mark.parametrize("threshold, expected_dog_dog", [(0.5, 0), (0.05, 1)])
def test_the_score_threshold_decides_what_is_counted(threshold, expected_dog_dog):
    instances = [{"object": [obj("dog", B)]}]
    counts = confusion_matrix(instances, [dets((B, 0.1, DOG))], LABELS, threshold)
    assert counts[DOG, DOG] == expected_dog_dog and counts[BACKGROUND, DOG] == 1 - expected_dog_dog
