"""The in-graph decoding and NMS (decoding.py) against the numpy reference (utils.detect), on TensorFlow and JAX."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import ROOT

from decoding import DecodeDetections
from utils import detect

CASES = [  # (seed, grid, anchors, classes, score threshold, nms threshold, max detections)
    (0, (4, 4), [1.0, 1.0, 2.0, 3.0], 3, 0.005, 0.45, 300),
    pytest.param(
        1, (13, 13), [1.3, 1.7, 3.2, 4.0, 5.1, 8.1, 9.5, 4.8, 11.2, 10.0], 20, 0.005, 0.45, 300, marks=pytest.mark.slow
    ),  # VOC's shape
    (2, (7, 5), [0.6, 0.6, 1.6, 0.9], 2, 0.3, 0.45, 300),
    (3, (6, 6), [4.0, 4.0], 4, 0.0, 0.3, 7),  # every candidate, a small cap
    (4, (3, 3), [1.0, 1.0, 2.0, 2.0], 1, 0.9, 0.45, 300),  # almost nothing passes
]


def netouts(seed, grid, anchors, classes, batch=3):
    rng = np.random.default_rng(seed)
    out = rng.normal(0, 1.5, (batch, *grid, len(anchors) // 2, 5 + classes)).astype(np.float32)
    out[0, ..., 2:4] -= 25.0  # exp(tw) underflows: boxes of no size, dropped after clipping
    return out


def graph_detect(netout, anchors, score_threshold, nms_threshold, max_detections):
    layer = DecodeDetections(anchors, score_threshold, nms_threshold, max_detections)
    return {k: keras.ops.convert_to_numpy(v) for k, v in layer(netout).items()}


def assert_same_as_reference(result, netout, anchors, score_threshold, nms_threshold, max_detections):
    sizes = [(100 + 17 * b, 150 - 9 * b) for b in range(len(netout))]
    reference = detect(netout, anchors, sizes, score_threshold, nms_threshold, max_detections)
    for b, ((boxes, scores, classes), (h, w)) in enumerate(zip(reference, sizes)):
        n = int(result["num_detections"][b])
        assert n == len(scores), f"image {b}: {n} detections, the reference {len(scores)}"
        np.testing.assert_allclose(result["boxes"][b, :n] * [w, h, w, h], boxes, atol=1e-3 * max(w, h))
        np.testing.assert_allclose(result["scores"][b, :n], scores, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(result["classes"][b, :n], classes)
        assert not result["boxes"][b, n:].any() and not result["scores"][b, n:].any()  # padding is zero


@pytest.mark.parametrize("seed, grid, anchors, classes, score_threshold, nms_threshold, max_detections", CASES)
def test_graph_detections_equal_the_numpy_reference(
    seed, grid, anchors, classes, score_threshold, nms_threshold, max_detections
):
    settings = (score_threshold, nms_threshold, max_detections)
    netout = netouts(seed, grid, anchors, classes)
    result = graph_detect(netout, anchors, *settings)
    assert result["boxes"].shape == (3, settings[-1], 4) and result["classes"].dtype == np.int32
    assert_same_as_reference(result, netout, anchors, *settings)


def test_equal_scores_keep_the_reference_order():
    netout = np.zeros((1, 2, 2, 1, 5 + 3), np.float32)  # every box and class scores the same
    netout[..., 2:4] = -1.0  # small boxes that do not overlap their neighbours
    result = graph_detect(netout, [1.0, 1.0], 0.0, 0.45, 300)
    assert_same_as_reference(result, netout, [1.0, 1.0], 0.0, 0.45, 300)
    assert result["num_detections"][0] == 12


JAX_SCRIPT = r"""
import json, sys
import numpy as np
sys.path.insert(0, "tests")
import test_decoding as t
out = {}
for case in t.CASES:
    seed, grid, anchors, classes, *settings = getattr(case, "values", case)
    out[seed] = {k: v.tolist() for k, v in t.graph_detect(t.netouts(seed, grid, anchors, classes), anchors, *settings).items()}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_graph_detections_under_jax_equal_the_reference():
    pytest.importorskip("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
    done = subprocess.run([sys.executable, "-c", JAX_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for case in CASES:
        seed, grid, anchors, classes, *settings = getattr(case, "values", case)
        result = {k: np.array(v) for k, v in results[str(seed)].items()}
        assert_same_as_reference(result, netouts(seed, grid, anchors, classes), anchors, *settings)
