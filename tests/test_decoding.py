"""The in-graph decoding and NMS (decoding.py) against the numpy reference (utils.detect), on TensorFlow and JAX."""

import os

import keras
import numpy as np
import pytest
from conftest import ROOT, run_under_jax
from numpy_detect import detect

from decoding import DecodeDetections

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
    results = run_under_jax(JAX_SCRIPT)
    for case in CASES:
        seed, grid, anchors, classes, *settings = getattr(case, "values", case)
        result = {k: np.array(v) for k, v in results[str(seed)].items()}
        assert_same_as_reference(result, netouts(seed, grid, anchors, classes), anchors, *settings)


DEMO_SCRIPT = r"""
import json, sys, warnings
warnings.filterwarnings("ignore")
import keras
import numpy as np
sys.path.insert(0, "tests")
import test_decoding as t
print(json.dumps(t.demo_detections(sys.argv[1])))
"""


def demo_detections(folder):
    """The demo's detector (its config, untrained: every candidate passes the AP floor) on the first 12 of the
    demo's validation images (same seed), through the graph and through the numpy reference."""
    import glob

    from numpy_detect import detect as reference_detect

    from config import load_config
    from demo_data import write_split
    from detections import detect_files
    from evaluate import AP_SCORE_FLOOR
    from frontend import YOLO
    from images import decode_image

    write_split(folder, 12, seed=2024 + 1)
    config = load_config(os.path.join(ROOT, "configs", "demo.json"))
    keras.utils.set_random_seed(0)
    yolo = YOLO.from_config(config)
    paths = sorted(glob.glob(os.path.join(folder, "images", "*.jpg")))
    out = {}
    for floor in (AP_SCORE_FLOOR, 0.3):
        settings = {"score_threshold": floor, "nms_threshold": 0.45, "max_detections": 300}
        images = [decode_image(p) for p in paths]
        graph = [d for _, _, d in detect_files(yolo, paths, settings, progress=False)]
        netout = yolo.inference_model.predict_on_batch(np.stack([yolo_input(yolo, im) for im in images]))
        numpy = reference_detect(netout, yolo.anchors, [im.shape[:2] for im in images], *settings.values())
        out[str(floor)] = [[[a.tolist() for a in g], [a.tolist() for a in n]] for g, n in zip(graph, numpy)]
    return out


def yolo_input(yolo, image):
    from augmentation import network_input

    return network_input(image, (yolo.input_h, yolo.input_w), yolo.input_channels)


def assert_demo_detections_agree(result):
    counts = 0
    for per_image in result.values():
        for (boxes, scores, classes), (ref_boxes, ref_scores, ref_classes) in per_image:
            assert len(scores) == len(ref_scores)
            np.testing.assert_allclose(np.reshape(boxes, (-1, 4)), np.reshape(ref_boxes, (-1, 4)), atol=1e-3 * 192)
            np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-7)
            np.testing.assert_array_equal(classes, ref_classes)
            counts += len(scores)
    assert counts > 100


@pytest.mark.slow
def test_yolo_detect_uses_the_graph_and_matches_the_reference_on_demo_images(tmp_path):
    assert_demo_detections_agree(demo_detections(str(tmp_path / "valid")))


@pytest.mark.slow
def test_yolo_detect_under_jax_matches_the_reference_on_demo_images(tmp_path):
    pytest.importorskip("jax")
    assert_demo_detections_agree(run_under_jax(DEMO_SCRIPT, tmp_path / "valid"))
