"""Multi-scale training (darknet's random=1): the size schedule, the batches, and a model that trains at every
size while compiling once per size, not once per switch."""

import keras
import numpy as np
import pytest
from conftest import SHAPES_JPG, run_under_jax

import batch_maker
from batch_maker import multi_scale_side
from batches import BatchGenerator
from config import ConfigError, build_config, generator_args
from custom_layers import Reorg
from frontend import YOLO
from preprocessing import TargetLayout

ONE_SHAPE = {"filename": SHAPES_JPG, "width": 128, "height": 128,
             "object": [{"name": "a", "difficult": False, "xmin": 10, "ymin": 20, "xmax": 60, "ymax": 90}]}  # fmt: skip


def test_multi_scale_side_follows_darknet():
    total = 1000
    sides = [multi_scale_side(b, (320, 608), total, seed=0) for b in range(total)]
    for start in range(0, total, 10):  # one size per 10 batches (detector.c: count++ % 10)
        assert len(set(sides[start : start + 10])) == 1
    assert set(sides[:800]) <= set(range(320, 609, 32)) and len(set(sides[:800])) >= 8  # (rand() % 10 + 10) * 32
    assert set(sides[800:]) == {608}  # the last 200 batches at the largest size
    assert sides == [multi_scale_side(b, (320, 608), total, seed=0) for b in range(total)]  # resumable
    assert sides != [multi_scale_side(b, (320, 608), total, seed=1) for b in range(total)]


def _generator(layout, multi_scale, epochs=1, times=1, stream=True):
    config = build_config({"train": {"seed": 3}})
    args = {**generator_args(config, "train"), "batch_size": 2, "times": times, "multi_scale": multi_scale,
            "epochs": epochs, "workers": 1, "stream": stream}  # fmt: skip
    return BatchGenerator([ONE_SHAPE, {**ONE_SHAPE, "object": ONE_SHAPE["object"] * 2}], layout, **args)


def test_multi_scale_batches_equal_those_of_a_detector_built_at_that_size(monkeypatch):
    monkeypatch.setattr(batch_maker, "MULTI_SCALE_FINAL_BATCHES", 0)
    layout = TargetLayout(["a"], (128, 128), (4, 4), [1.0, 1.0, 2.0, 3.0], 4, 3)
    multi = _generator(layout, (64, 256), epochs=1, times=200)
    seen_sides = set()
    for idx in (0, 9, 10, 55, 99):
        side = multi_scale_side(idx, (64, 256), len(multi), multi.seed)
        seen_sides.add(side)
        x, y = multi[idx]
        assert x["input_image"].shape == (2, side, side, 3) and y["grid"].shape == (2, side // 32, side // 32, 2, 6)
        fixed_x, fixed_y = _generator(layout.at(side), None, times=200)[idx]  # same draws, a fixed-size detector
        for got, want in ((x, fixed_x), (y, fixed_y)):
            for key in got:
                np.testing.assert_array_equal(got[key], want[key], err_msg=f"{key} at {side}")
    assert len(seen_sides) >= 2


def test_validation_batches_stay_at_the_configured_size():
    config = build_config({"train": {"multi_scale": True}})
    assert generator_args(config, "valid")["multi_scale"] is None
    assert generator_args(config, "train")["multi_scale"] == (320, 608)


@pytest.mark.parametrize("sizes", [[320], [320, 600], [608, 320], "320-608", [0, 32]])
def test_multi_scale_sizes_must_be_two_multiples_of_32(sizes):
    with pytest.raises(ConfigError, match="multi_scale_sizes must be"):
        build_config({"train": {"multi_scale_sizes": sizes}})


def test_reorg_under_open_sizes_matches_the_fixed_size_layer():
    import tensorflow as tf

    x = np.random.default_rng(0).normal(size=(2, 6, 10, 8)).astype(np.float32)
    for mode in ("darknet", "space_to_depth"):
        layer = Reorg(mode=mode)
        open_sizes = tf.function(layer.call, input_signature=[tf.TensorSpec((None, None, None, 8))])
        np.testing.assert_array_equal(open_sizes(x).numpy(), keras.ops.convert_to_numpy(layer(x)))


def test_a_backend_without_stride_32_at_every_size_is_refused():
    with pytest.raises(Exception, match="multi-scale training.*must reduce the input 32 times"):
        YOLO("InceptionV3", 128, ["a"], 4, [1, 1], load_pretrained=False, multi_scale=(96, 160))


def count_loss_traces(yolo):
    """The loss runs in Python only while a train step is traced (compiled): count those runs."""
    traced = []
    loss = yolo.model.yolo_loss

    def counting(*args):
        traced.append(tuple(args[1].shape))
        return loss(*args)

    yolo.model.yolo_loss = counting
    return traced


@pytest.mark.slow
def test_multi_scale_fit_trains_at_each_size_and_traces_once_not_per_switch(monkeypatch):
    from tf_data import fit_data

    monkeypatch.setattr(batch_maker, "MULTI_SCALE_FINAL_BATCHES", 0)
    yolo = YOLO("MobileNet", 96, ["a"], 4, [1.0, 1.0, 2.0, 3.0], backend_options={"alpha": 0.25},
                load_pretrained=False, freeze_backend=False, multi_scale=(64, 160))  # fmt: skip
    train = _generator(TargetLayout.of(yolo), yolo.multi_scale, times=60)  # 60 batches: 96 96 128 160 160 128
    sides = [multi_scale_side(i, yolo.multi_scale, len(train), train.seed) for i in range(len(train))]
    switches = sum(a != b for a, b in zip(sides, sides[1:]))
    assert len(set(sides)) >= 2 and switches >= 2
    valid = _generator(TargetLayout.of(yolo), None, stream=False)
    traced = count_loss_traces(yolo)
    head = yolo.model.get_layer("DetectionLayer")
    before = keras.ops.convert_to_numpy(head.kernel).copy()
    yolo.model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = yolo.model.fit(fit_data(train, 0), steps_per_epoch=len(train), validation_data=valid, epochs=1,
                             verbose=0, shuffle=False)  # fmt: skip
    assert np.isfinite(history.history["loss"][0]) and np.isfinite(history.history["val_loss"][0])
    assert not np.allclose(before, keras.ops.convert_to_numpy(head.kernel))
    train_traces = len(traced) - 1  # one trace is the validation step, at the configured 96
    assert 1 <= train_traces <= len(set(sides)) and train_traces <= switches
    assert yolo.predict(SHAPES_JPG, score_threshold=0.0)  # inference at input_size from the same graph


JAX_SCRIPT = r"""
import json, sys, warnings
warnings.filterwarnings("ignore")
import keras
sys.path.insert(0, "tests")
import batch_maker
import preprocessing
batch_maker.MULTI_SCALE_FINAL_BATCHES = 0
import test_multi_scale as t
from frontend import YOLO
yolo = YOLO("MobileNet", 96, ["a"], 4, [1.0, 1.0, 2.0, 3.0], backend_options={"alpha": 0.25},
            load_pretrained=False, freeze_backend=False, multi_scale=(64, 160))
train = t._generator(preprocessing.TargetLayout.of(yolo), yolo.multi_scale, times=60)
traced = t.count_loss_traces(yolo)
yolo.model.compile(optimizer=keras.optimizers.Adam(1e-3))
loss = yolo.model.fit(train, steps_per_epoch=len(train), epochs=1, verbose=0).history["loss"][0]
sides = [batch_maker.multi_scale_side(i, yolo.multi_scale, len(train), train.seed) for i in range(len(train))]
print(json.dumps({"traced": [list(s) for s in traced], "sides": sides, "loss": loss}))
"""


@pytest.mark.slow
def test_multi_scale_under_jax_compiles_once_per_size():
    pytest.importorskip("jax")
    result = run_under_jax(JAX_SCRIPT)
    grids = sorted({side // 32 for side in result["sides"]})
    traced_grids = sorted({shape[1] for shape in result["traced"]})
    assert traced_grids == grids  # every size compiled ...
    assert len(result["traced"]) == len(grids)  # ... once, though the sizes switch more often
    assert sum(a != b for a, b in zip(result["sides"], result["sides"][1:])) > len(grids) - 1
    assert np.isfinite(result["loss"])
