"""k-means anchors (1 - IoU distance): known clusters, hand-computed IoU, darknet's method on BCCD, the CLI."""

import json
import os

import numpy as np
import pytest
from conftest import shared_path

import main as cli
from anchors import average_iou, find_anchors, instance_shapes, shape_iou
from errors import UserError
from preprocessing import parse_annotation


def test_average_iou_by_hand():
    # a 2x2 box against a 1x1 anchor: IoU 1/4
    assert average_iou(np.array([[1.0, 1.0], [2.0, 2.0]]), np.array([[1.0, 1.0]])) == pytest.approx(0.625)
    np.testing.assert_allclose(shape_iou(np.array([[2.0, 1.0]]), np.array([[1.0, 2.0]])), [[1 / 3]])


def test_recovers_known_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[0.1, 0.1], [0.3, 0.15], [0.2, 0.5]])
    wh = np.concatenate([c * rng.uniform(0.95, 1.05, (300, 2)) for c in centres])
    anchors, iou = find_anchors(wh, 3)
    order = np.argsort(centres[:, 0] * centres[:, 1])
    np.testing.assert_allclose(anchors, centres[order], rtol=0.03)
    assert iou > 0.9


def test_fewer_boxes_than_anchors_is_a_clear_error():
    with pytest.raises(UserError, match="at least 5 boxes to choose 5 anchors, the training set has 3"):
        find_anchors(np.ones((3, 2)), 5)


def darknet_kmeans(wh, k, seed):
    """darknet's recipe (YOLOv2 paper; AlexeyAB's calc_anchors): random boxes as seeds, 1 - IoU, mean update."""
    rng = np.random.default_rng(seed)
    centroids = wh[rng.choice(len(wh), k, replace=False)].copy()
    for _ in range(1000):
        inter = np.minimum(wh[:, None, 0], centroids[:, 0]) * np.minimum(wh[:, None, 1], centroids[:, 1])
        iou = inter / (wh[:, None, 0] * wh[:, None, 1] + centroids[:, 0] * centroids[:, 1] - inter)
        nearest = iou.argmax(1)
        new = np.array([wh[nearest == j].mean(0) if np.any(nearest == j) else centroids[j] for j in range(k)])
        if np.allclose(new, centroids):
            break
        centroids = new
    return iou.max(1).mean()


def test_bccd_at_least_as_good_as_darknets_method():
    root = shared_path("data", "bccd")
    if root is None:
        pytest.skip("../shared/data/bccd is not present")
    instances, _ = parse_annotation(
        os.path.join(root, "annotations"), os.path.join(root, "images"), ["RBC", "WBC", "Platelets"]
    )
    wh = instance_shapes(instances)
    anchors, iou = find_anchors(wh, 5)
    reference = [darknet_kmeans(wh, 5, seed) for seed in range(5)]
    print(f"BCCD, 5 anchors: ours {iou:.4f}, darknet's k-means over 5 seeds {min(reference):.4f}..{max(reference):.4f}")
    assert iou >= max(reference) - 1e-4
    assert len(anchors) == 5


def test_cli_prints_and_writes_anchors(tmp_path, capsys, demo_like_config):
    path, _ = demo_like_config(tmp_path, train_count=20)
    result = cli.main(["anchors", "--config", path, "-n", "3", "--write"])
    out = capsys.readouterr().out
    assert "3 anchors for 96x96 input (3x3 grid)" in out and "average IoU" in out
    with open(path) as f:
        written = json.load(f)["model"]["anchors"]
    assert written == result["anchors"] and len(written) == 6
    # grid units: the relative shapes found, times the 3x3 grid
    assert all(0 < v <= 3 for v in written)


def test_writing_anchors_changes_only_the_anchors():
    from anchors import with_anchors

    text = """{
    "model": {
        "backend":  "Tiny Yolo",
        "labels":   ["a}", "b"],
        "anchors":  [0.57273, 0.677385,
                     1.87446, 2.06253]
    },
    "train": {"anchors": [9, 9], "batch_size": 4}
}
"""
    new = with_anchors(text, [1.5, 2.25])
    assert new == text.replace("[0.57273, 0.677385,\n                     1.87446, 2.06253]", "[1.5, 2.25]")
    assert json.loads(new)["train"]["anchors"] == [9, 9]  # another section's key is not the model's
    added = with_anchors('{\n  "model": {\n    "backend": "MobileNet"\n  }\n}\n', [1.0, 2.0])
    assert added == '{\n  "model": {\n    "anchors": [1.0, 2.0],\n    "backend": "MobileNet"\n  }\n}\n'
    assert json.loads(with_anchors('{"model": {}}', [3.0, 4.0])) == {"model": {"anchors": [3.0, 4.0]}}
    assert with_anchors('{"train": {}}', [1.0, 1.0]) is None  # no model section: written as a whole instead
