"""Detector construction: the seed's parameter counts, the passthrough, freezing, weight files."""

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import SHAPES_JPG, SLOW_TO_BUILD

from backends import BACKENDS, get_backend
from custom_layers import Reorg
from errors import UserError
from frontend import YOLO
from weight_files import load_backend_weights, save_backend_weights

LABELS20 = [f"c{i}" for i in range(20)]


def count(variables):
    return sum(int(np.prod(v.shape)) for v in variables)


def test_seed_summary_full_yolo_416_frozen():
    yolo = YOLO(backend="Full Yolo", input_size=416, labels=LABELS20, max_box_per_image=10,
                anchors=[0.57, 0.68, 1.87, 2.06, 3.34, 5.47, 7.88, 3.53], load_pretrained=False)  # fmt: skip
    assert count(yolo.model.weights) == 50_650_436
    assert count(yolo.model.trainable_weights) == 102_500
    assert count(yolo.model.non_trainable_weights) == 50_547_936
    assert tuple(yolo.model.output.shape) == (None, 13, 13, 4, 25)
    assert tuple(yolo.inference_model.output.shape) == (None, 13, 13, 4, 25)
    # The inference model needs no ground-truth input.
    assert [t.name for t in yolo.inference_model.inputs] == ["input_image"]
    names = {layer.name for layer in yolo.backend_model.layers}
    assert {f"conv_{i}" for i in range(1, 23)} <= names and {f"norm_{i}" for i in range(1, 23)} <= names


def darknet_reorg(x_nchw, stride=2):
    """reorg_cpu(x, w, h, c, batch, stride, forward=0, out) as darknet's forward_reorg_layer calls it."""
    b_, c, h, w = x_nchw.shape
    x, out = x_nchw.reshape(-1), np.zeros(x_nchw.size, x_nchw.dtype)
    out_c = c // (stride * stride)
    for b in range(b_):
        for k in range(c):
            for j in range(h):
                for i in range(w):
                    in_index = i + w * (j + h * (k + c * b))
                    c2, offset = k % out_c, k // out_c
                    w2, h2 = i * stride + offset % stride, j * stride + offset // stride
                    out_index = w2 + w * stride * (h2 + h * stride * (c2 + out_c * b))
                    out[in_index] = x[out_index]
    return out.reshape(b_, c * stride * stride, h // stride, w // stride)


@pytest.mark.parametrize("shape", [(2, 4, 6, 8), (1, 6, 4, 12)])
def test_reorg_matches_darknet_reorg_layer(shape):
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)  # NHWC
    ours = keras.ops.convert_to_numpy(Reorg(mode="darknet")(x))
    reference = darknet_reorg(x.transpose(0, 3, 1, 2)).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(ours, reference)
    # and it is not space_to_depth: keras-yolo2 files need the other mode
    assert not np.array_equal(ours, tf.nn.space_to_depth(x, 2).numpy())


def test_reorg_space_to_depth_mode_matches_tensorflow():
    x = np.random.default_rng(0).normal(size=(2, 4, 6, 8)).astype(np.float32)
    ours = keras.ops.convert_to_numpy(Reorg(mode="space_to_depth")(x))
    np.testing.assert_array_equal(ours, tf.nn.space_to_depth(x, 2).numpy())


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.slow) if n in SLOW_TO_BUILD else n
        for n in sorted(c.name for c in BACKENDS.values())
    ],
)
def test_every_backend_builds_at_stride_32(name):
    options = {"alpha": 0.25} if name == "MobileNet" else {}
    yolo = YOLO(backend=name, input_size=[128, 160], labels=["a", "b"], max_box_per_image=5,
                anchors=[1, 1, 2, 2], backend_options=options, load_pretrained=False)  # fmt: skip
    assert (yolo.grid_h, yolo.grid_w) == (4, 5)
    out = yolo.inference_model.predict_on_batch(np.zeros((1, 128, 160, 3), np.uint8))
    assert out.shape == (1, 4, 5, 2, 7)
    norms = [
        layer for layer in yolo.backend_model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert all(layer.momentum == 0.97 for layer in norms)  # short runs must evaluate as they train


def test_tiny_yolo_keeps_13x13_after_stride_1_maxpool():
    backend = get_backend("Tiny Yolo").build((416, 416, 3))
    assert tuple(backend.output.shape) == (None, 13, 13, 1024)
    assert len([layer for layer in backend.layers if layer.name.startswith("conv_")]) == 8


def tiny_detector(**kwargs):
    kwargs.setdefault("load_pretrained", "backend_weights" in kwargs)
    return YOLO(backend="Tiny Yolo", input_size=128, labels=["a", "b"], max_box_per_image=4,
                anchors=[1, 1, 2, 2], **kwargs)  # fmt: skip


ONE_SHAPE = {"filename": SHAPES_JPG, "width": 128, "height": 128,
             "object": [{"name": "a", "difficult": False, "xmin": 10, "ymin": 20, "xmax": 60, "ymax": 90}]}  # fmt: skip


def test_frozen_backend_is_unchanged_by_training_and_head_changes(plain_batches):
    yolo = tiny_detector()
    backend_before = [v.numpy().copy() for v in yolo.backend_model.weights]  # BN moving stats included
    head = yolo.model.get_layer("DetectionLayer")
    head_before = head.kernel.numpy().copy()
    yolo.model.compile(optimizer=keras.optimizers.Adam(1e-2), run_eagerly=True)
    data = plain_batches([ONE_SHAPE], yolo, 2)
    yolo.model.fit(data, steps_per_epoch=len(data), epochs=2, verbose=0)
    for before, after in zip(backend_before, yolo.backend_model.weights):
        np.testing.assert_array_equal(before, after.numpy())
    assert not np.allclose(head_before, head.kernel.numpy())


@pytest.mark.slow  # several seconds; the quick subset keeps to 3 minutes
def test_fit_serves_the_runs_batches_in_order_and_a_resumed_fit_continues_them(plain_batches):
    """Keras 3 calls on_epoch_end once before training: batches must still start at `seen` 0, epoch after epoch,
    and a fit resumed at epoch 1 must start at epoch 1's first batch."""
    from tf_data import fit_data

    yolo = tiny_detector()
    batches = plain_batches([ONE_SHAPE], yolo, 2, times=4)  # 2 batches an epoch
    served = []

    class Recording(type(batches)):
        def __getitem__(self, i):
            result = super().__getitem__(i)
            served.append(int(result[1]["seen"][0]))
            return result

    batches.__class__ = Recording
    yolo.model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=False)
    yolo.model.fit(fit_data(batches, 0), steps_per_epoch=len(batches), epochs=2, verbose=0, shuffle=False)
    # TensorFlow's adapter first computes two batches to learn their shapes, and tf.data computes ahead
    peeked = 2 if keras.backend.backend() == "tensorflow" else 0
    assert served[peeked : peeked + 4] == [0, 2, 4, 6]
    served.clear()
    yolo.model.fit(fit_data(batches, 1), steps_per_epoch=len(batches), epochs=2, initial_epoch=1, verbose=0)
    assert served[peeked : peeked + 2] == [4, 6]


def test_unfrozen_backend_trains(plain_batches):
    yolo = tiny_detector(freeze_backend=False)
    conv = yolo.backend_model.get_layer("conv_1")
    before = conv.kernel.numpy().copy()
    yolo.model.compile(optimizer=keras.optimizers.Adam(1e-2), run_eagerly=True)
    data = plain_batches([ONE_SHAPE], yolo, 2)
    yolo.model.fit(data, steps_per_epoch=len(data), epochs=1, verbose=0)
    assert not np.allclose(before, conv.kernel.numpy())


def test_train_run_eagerly_runs_the_loss_in_python_at_every_step(plain_batches):
    from config import build_config, compile_args

    yolo = tiny_detector()
    calls, loss = [], yolo.model.yolo_loss
    yolo.model.yolo_loss = lambda *args: calls.append(1) or loss(*args)
    yolo.model.compile(optimizer="adam", **compile_args(build_config({"train": {"run_eagerly": True}})))
    data = plain_batches([ONE_SHAPE], yolo, 1, times=3)
    yolo.model.fit(data, steps_per_epoch=len(data), epochs=1, verbose=0)
    assert len(calls) == 3  # traced, the loss's Python would run once or twice in all


def test_backend_weights_round_trip_and_load_by_default(tmp_path):
    source = get_backend("Tiny Yolo").build((128, 128, 3))
    for v in source.weights:
        v.assign(np.random.default_rng(1).normal(size=v.shape).astype(np.float32))
    path = str(tmp_path / "tiny_yolo_backend.h5")
    save_backend_weights(source, path)
    yolo = tiny_detector(backend_weights=path)
    assert yolo.backend_weights == path
    for a, b in zip(source.weights, yolo.backend_model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_backend_weights_mismatch_is_a_clear_error(tmp_path):
    path = str(tmp_path / "wrong.h5")
    save_backend_weights(get_backend("Tiny Yolo").build((128, 128, 3)), path)
    target = get_backend("Full Yolo").build((128, 128, 3))
    with pytest.raises(UserError, match=r"wrong\.h5: does not hold weights for .* layer"):
        load_backend_weights(target, path)
    with h5py.File(path, "a") as f:  # same names, wrong shape
        del f["conv_1"]["conv_1/kernel:0"]
        f["conv_1"].create_dataset("conv_1/kernel:0", data=np.zeros((3, 3, 3, 7), np.float32))
    with pytest.raises(UserError, match=r"layer conv_1 has weights of shapes"):
        load_backend_weights(get_backend("Tiny Yolo").build((128, 128, 3)), path)


def test_detector_weights_save_and_load(tmp_path):
    a, b = tiny_detector(), tiny_detector()
    path = str(tmp_path / "det.weights.h5")
    a.save_weights(path)
    b.load_weights(path)
    x = np.random.default_rng(0).integers(0, 255, (1, 128, 128, 3)).astype(np.uint8)
    np.testing.assert_allclose(a.inference_model.predict_on_batch(x), b.inference_model.predict_on_batch(x), atol=1e-6)


def test_uint8_and_float_inputs_agree():
    yolo = tiny_detector()
    x = np.random.default_rng(0).integers(0, 255, (1, 128, 128, 3)).astype(np.uint8)
    np.testing.assert_allclose(
        yolo.inference_model.predict_on_batch(x), yolo.inference_model.predict_on_batch(x.astype(np.float32)), atol=1e-5
    )


@pytest.mark.slow  # several seconds; the quick subset keeps to 3 minutes
def test_inference_model_saves_and_loads_without_custom_objects(tmp_path):
    yolo = YOLO(backend="Full Yolo", input_size=64, labels=["a"], max_box_per_image=2, anchors=[1, 1],
                load_pretrained=False)  # fmt: skip
    path = str(tmp_path / "full.keras")
    yolo.inference_model.save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(0).integers(0, 255, (1, 64, 64, 3)).astype(np.uint8)
    np.testing.assert_allclose(loaded.predict_on_batch(x), yolo.inference_model.predict_on_batch(x), atol=1e-5)


def test_training_graph_with_hack_layer_saves_and_loads(tmp_path):
    yolo = tiny_detector()
    graph = keras.Model(yolo.model.inputs, yolo.model.outputs)  # the same layers, as a plain functional model
    path = str(tmp_path / "train_graph.keras")
    graph.save(path)
    loaded = keras.models.load_model(path)
    assert any(type(layer).__name__ == "GroundTruthPassthrough" for layer in loaded.layers)
    x = {"input_image": np.zeros((1, 128, 128, 3), np.uint8), "true_boxes": np.zeros((1, 1, 1, 1, 4, 4), np.float32)}
    np.testing.assert_allclose(loaded.predict_on_batch(x), graph.predict_on_batch(x), atol=1e-5)


def test_corrupt_backend_weights_file_is_a_clear_error(tmp_path):
    path = tmp_path / "tiny_yolo_backend.h5"
    path.write_bytes(b"this is not HDF5")
    with pytest.raises(UserError, match=r"tiny_yolo_backend\.h5 is not a weights file \(not readable HDF5"):
        tiny_detector(backend_weights=str(path))


def backend_variables_one_step_changes(yolo):
    """The paths of the backend variables one training step changes (64 px Tiny Yolo, 2x2 grid)."""
    before = {v.path: v.numpy().copy() for v in yolo.backend_model.weights}
    yolo.model.compile(optimizer=keras.optimizers.Adam(1e-2), run_eagerly=True)
    batch = {"input_image": np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8),
             "true_boxes": np.zeros((2, 1, 1, 1, 2, 4), np.float32)}  # fmt: skip
    target = {"grid": np.zeros((2, 2, 2, 1, 6), np.float32), "seen": np.full((2,), 1e9, np.float32)}
    yolo.model.train_on_batch(batch, target)
    return {v.path for v in yolo.backend_model.weights if not np.array_equal(v.numpy(), before[v.path])}


@pytest.mark.parametrize(
    "spec, frozen",
    [
        (3, {"conv_1", "norm_1", "conv_2"}),
        (["conv_1", "norm_1", "*_8"], {"conv_1", "norm_1", "conv_8", "norm_8"}),
        (False, set()),
    ],
)
def test_freeze_first_layers_or_named_patterns(spec, frozen):
    yolo = YOLO("Tiny Yolo", 64, ["a"], 2, [1, 1], freeze_backend=spec, load_pretrained=False)
    trainable = {v.path.split("/")[0] for v in yolo.backend_model.trainable_variables}
    all_layers = {v.path.split("/")[0] for v in yolo.backend_model.weights}
    assert trainable == all_layers - frozen
    changed = {path.split("/")[0] for path in backend_variables_one_step_changes(yolo)}
    assert changed == all_layers - frozen  # frozen: kernels and BatchNorm statistics untouched


def test_freeze_pattern_matching_nothing_is_a_clear_error():
    with pytest.raises(
        UserError, match=r"'conv_99' matches no layer of the backend \(tiny_yolo_backend; its layers: conv_1, norm_1"
    ):
        YOLO("Tiny Yolo", 64, ["a"], 2, [1, 1], freeze_backend=["conv_99"], load_pretrained=False)


def test_unfreezing_keeps_the_frozen_batchnorm_layers_in_inference_mode():
    """Staged fine-tuning (unfreeze_after): kernels start to train; a BatchNorm that was frozen keeps its
    statistics and scale; one that already trained goes on training."""
    yolo = YOLO("Tiny Yolo", 64, ["a"], 2, [1, 1], freeze_backend=3, load_pretrained=False)  # conv_1, norm_1, conv_2
    assert yolo.unfreeze_backend() == 1
    trainable = {v.path.split("/")[0] for v in yolo.backend_model.trainable_variables}
    all_layers = {v.path.split("/")[0] for v in yolo.backend_model.weights}
    assert trainable == all_layers - {"norm_1"}
    changed = backend_variables_one_step_changes(yolo)
    assert {path.split("/")[0] for path in changed} == all_layers - {"norm_1"}
    assert any("norm_2/moving_mean" in path for path in changed)  # a BatchNorm that trained still does

    whole = YOLO("Tiny Yolo", 64, ["a"], 2, [1, 1], load_pretrained=False)  # the default: all frozen
    assert whole.unfreeze_backend() == 8  # norm_1 .. norm_8
    x = np.random.default_rng(1).uniform(0, 1, (2, 64, 64, 3)).astype(np.float32)
    np.testing.assert_array_equal(whole.backend_model(x, training=True), whole.backend_model(x, training=False))
