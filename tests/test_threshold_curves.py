"""Precision, recall and F1 against the score threshold, by hand, and the files an evaluation writes."""

import json

import numpy as np
import pytest

from evaluate import evaluate_detections, report_evaluation


def one_class_case():
    """Two objects; detections 0.9 (hits the first), 0.8 (a false alarm), 0.7 (hits the second)."""
    instances = [{"object": [{"name": "a", "difficult": False, "xmin": 1, "ymin": 1, "xmax": 10, "ymax": 10},
                             {"name": "a", "difficult": False, "xmin": 51, "ymin": 51, "xmax": 60, "ymax": 60}]}]  # fmt: skip
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]], float)
    return instances, [(boxes, np.array([0.9, 0.8, 0.7]), np.array([0, 0, 0]))]


def test_curves_by_hand():
    instances, detections = one_class_case()
    curves = evaluate_detections(instances, detections, ["a"], "voc", 0.3)["curves"]
    t = list(curves["thresholds"])
    f1 = curves["classes"]["a"]["f1"]
    assert f1[t.index(0.9)] == pytest.approx(2 * 1 * 0.5 / 1.5)  # P 1, R 1/2
    assert f1[t.index(0.8)] == pytest.approx(0.5)  # P 1/2, R 1/2
    assert f1[t.index(0.7)] == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))  # P 2/3, R 1
    assert f1[t.index(0.95)] == 0 and curves["classes"]["a"]["precision"][t.index(0.95)] == 0  # nothing kept
    assert curves["best"] == {
        "threshold": 0.7,  # every threshold up to 0.70 keeps all three: the highest of them
        "f1": pytest.approx(0.8),
        "precision": pytest.approx(2 / 3),
        "recall": 1.0,
    }


def test_evaluation_writes_the_curves_and_the_best_threshold(tmp_path, capsys):
    instances, detections = one_class_case()
    report_evaluation(instances, detections, ["a"], str(tmp_path), "voc", 0.3)
    for name in ("f1_curve.png", "p_curve.png", "r_curve.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["best_f1"]["f1"] == pytest.approx(0.8, abs=1e-6) and saved["best_f1"]["threshold"] == 0.7
    assert "Best mean F1 0.800 at score threshold 0.70" in capsys.readouterr().out
