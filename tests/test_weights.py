"""Pretrained weights: keras-yolo2's backend and whole-model files, the real ImageNet backbones, the
backend/detector distinction, and staged fine-tuning (frozen backend, then unfrozen)."""

import json

import h5py
import keras
import numpy as np
import pytest
from conftest import shared_path

from backends import get_backend, layers_with_weights
from backends.common import set_batchnorm_momentum
from config import load_config
from errors import UserError
from frontend import YOLO
from training import run_training
from weight_files import save_backend_weights

BN_WEIGHTS = ("gamma", "beta", "moving_mean", "moving_variance")


def legacy_weight_names(layer):
    """Keras 2's names for a layer's weights: conv_1/kernel:0, norm_1/gamma:0, ..."""
    if isinstance(layer, keras.layers.BatchNormalization):
        return [f"{layer.name}/{n}:0" for n in BN_WEIGHTS]
    return [f"{layer.name}/{n}:0" for n in ("kernel", "bias")[: len(layer.weights)]]


def write_keras2_backend(path, model, rng):
    """A backend file the way keras-yolo2 / Keras 2 `save_weights` wrote it (weightless layers listed too)."""
    arrays = {}
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"], f.attrs["backend"] = b"2.1.5", b"tensorflow"
        f.attrs["layer_names"] = [layer.name.encode() for layer in model.layers]
        for layer in model.layers:
            g = f.create_group(layer.name)
            names = legacy_weight_names(layer) if layer.weights else []
            g.attrs["weight_names"] = [n.encode() for n in names]
            for name, w in zip(names, layer.weights):
                arrays[name] = rng.normal(size=w.shape).astype(np.float32)
                g.create_dataset(name, data=arrays[name])
    return arrays


def write_keras_yolo2_checkpoint(path, yolo, rng):
    """keras-yolo2's ModelCheckpoint file: model_weights/, the backend as one nested model group
    ("model_1"), then DetectionLayer."""
    arrays = {}
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = b"{}"
        mw = f.create_group("model_weights")
        mw.attrs["layer_names"] = [b"input_1", b"model_1", b"DetectionLayer", b"reshape_1", b"input_2", b"lambda_2"]
        for name in ("input_1", "reshape_1", "input_2", "lambda_2"):
            mw.create_group(name).attrs["weight_names"] = []
        for group, layers in (("model_1", layers_with_weights(yolo.backend_model)),
                              ("DetectionLayer", [yolo.model.get_layer("DetectionLayer")])):  # fmt: skip
            g = mw.create_group(group)
            names = [n for layer in layers for n in legacy_weight_names(layer)]
            g.attrs["weight_names"] = [n.encode() for n in names]
            for name, w in zip(names, [w for layer in layers for w in layer.weights]):
                arrays[name] = rng.normal(size=w.shape).astype(np.float32)
                g.create_dataset(name, data=arrays[name])
    return arrays


def tiny(**kwargs):
    return YOLO("Tiny Yolo", 128, ["raccoon"], 5, [1, 1, 2, 2, 3, 3, 4, 4, 5, 5], load_pretrained=False, **kwargs)


def test_keras_yolo2_backend_file_loads(tmp_path):
    path = str(tmp_path / "tiny_yolo_backend.h5")
    arrays = write_keras2_backend(path, get_backend("Tiny Yolo").build((416, 416, 3)), np.random.default_rng(0))
    yolo = YOLO("Tiny Yolo", 128, ["raccoon"], 5, [1, 1], backend_weights=path)
    assert yolo.backend_weights == path
    np.testing.assert_array_equal(yolo.backend_model.get_layer("conv_3").kernel.numpy(), arrays["conv_3/kernel:0"])
    np.testing.assert_array_equal(
        yolo.backend_model.get_layer("norm_8").moving_variance.numpy(), arrays["norm_8/moving_variance:0"]
    )


def test_keras_yolo2_full_model_checkpoint_loads_as_pretrained_weights(tmp_path):
    path = str(tmp_path / "tiny_yolo_raccoon.h5")
    arrays = write_keras_yolo2_checkpoint(path, tiny(), np.random.default_rng(0))
    yolo = tiny()
    yolo.load_weights(path)
    np.testing.assert_array_equal(
        yolo.model.get_layer("DetectionLayer").kernel.numpy(), arrays["DetectionLayer/kernel:0"]
    )
    np.testing.assert_array_equal(yolo.backend_model.get_layer("conv_5").kernel.numpy(), arrays["conv_5/kernel:0"])
    other = YOLO("Tiny Yolo", 128, ["a", "b"], 5, [1, 1, 2, 2, 3, 3, 4, 4, 5, 5], load_pretrained=False)
    with pytest.raises(UserError, match=r"head has 30 outputs, this detector 35 = 5 anchors x \(5 \+ 2 labels\)"):
        other.load_weights(path)


@pytest.mark.slow
def test_keras_yolo2_full_yolo_checkpoint_warns_about_the_passthrough(tmp_path):
    source = YOLO("Full Yolo", 64, ["raccoon"], 5, [1, 1], load_pretrained=False)
    path = str(tmp_path / "full_yolo_raccoon.h5")
    write_keras_yolo2_checkpoint(path, source, np.random.default_rng(0))
    with pytest.warns(UserWarning, match="space_to_depth"):
        YOLO("Full Yolo", 64, ["raccoon"], 5, [1, 1], load_pretrained=False).load_weights(path)


@pytest.mark.slow  # several seconds; the quick subset keeps to 3 minutes
def test_backend_and_detector_files_are_not_confused(tmp_path):
    backend = str(tmp_path / "tiny_yolo_backend.h5")
    save_backend_weights(get_backend("Tiny Yolo").build((128, 128, 3)), backend)
    with pytest.raises(UserError, match=r"is a backend file \(no detection head\).*A backend file holds only"):
        tiny().load_weights(backend)
    checkpoint = str(tmp_path / "keras_yolo2_detector.h5")
    write_keras_yolo2_checkpoint(checkpoint, tiny(), np.random.default_rng(0))
    with pytest.raises(UserError, match="is a whole detector's weights, not a backend file"):
        YOLO("Tiny Yolo", 128, ["r"], 5, [1, 1], backend_weights=checkpoint)
    ours = str(tmp_path / "best.weights.h5")
    tiny().save_weights(ours)
    with pytest.raises(UserError, match="not a Keras 2 style weights file.*A backend file holds only"):
        YOLO("Tiny Yolo", 128, ["r"], 5, [1, 1], backend_weights=ours)


def _first_array(path, layer_name):
    with h5py.File(path, "r") as f:
        g = f[layer_name]
        return np.asarray(g[g.attrs["weight_names"][0]])


def test_real_squeezenet_imagenet_file_loads():
    path = shared_path("weights", "squeezenet_weights_tf_dim_ordering_tf_kernels_notop.h5")
    if path is None:
        pytest.skip("../shared/weights is not here")
    yolo = YOLO("SqueezeNet", 224, ["raccoon"], 5, [1, 1], backend_weights=path)
    layer = yolo.backend_model.get_layer("fire9_expand3x3")
    np.testing.assert_array_equal(layer.kernel.numpy(), _first_array(path, "fire9/expand3x3"))
    np.testing.assert_array_equal(yolo.backend_model.get_layer("conv1").kernel.numpy(), _first_array(path, "conv1"))


def test_real_mobilenet_imagenet_file_loads():
    path = shared_path("weights", "mobilenet_2_5_224_tf_no_top.h5")
    if path is None:
        pytest.skip("../shared/weights is not here")
    yolo = YOLO("MobileNet", 224, ["raccoon"], 5, [1, 1], backend_weights=path, backend_options={"alpha": 0.25})
    names = {layer.name: layer for layer in layers_with_weights(yolo.backend_model)}
    np.testing.assert_array_equal(names["conv_pw_13"].kernel.numpy(), _first_array(path, "conv_pw_13"))


@pytest.mark.slow
def test_staged_fine_tuning_keeps_the_backend_then_trains_it(tmp_path, demo_like_config):
    """unfreeze_after=1: epoch 1 trains the head on a frozen backend (bit-identical, BatchNorm statistics
    included), epoch 2 trains the convolutions while BatchNorm keeps the backend file's statistics."""
    backend_path = str(tmp_path / "mobilenet_backend.h5")
    source = get_backend("MobileNet", alpha=0.25).build((96, 96, 3))
    # statistics that fit images, as a pretrained file's do (a random file's vanish in inference mode): one pass in
    # training mode at momentum 0 leaves every BatchNorm with the batch's mean and variance
    set_batchnorm_momentum(source, 0.0)
    source(np.random.default_rng(0).uniform(0, 255, (8, 96, 96, 3)).astype(np.float32), training=True)
    save_backend_weights(source, backend_path)
    initial = [w.numpy().copy() for w in source.weights]
    path, _ = demo_like_config(tmp_path, nb_epochs=2, unfreeze_after=1)
    config = load_config(path)
    config["model"].update(freeze_backend=True, backend_weights=backend_path)
    config["valid"]["map_every"] = 0
    snapshots, paths = [], []

    class Snapshot(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            backend = self.model.get_layer("mobilenet_backend")
            snapshots.append([w.numpy().copy() for w in backend.weights])
            paths.append([w.path for w in backend.weights])

    run_training(config, verbose=0, callbacks=[Snapshot()])
    assert len(snapshots) == 2
    for before, after in zip(initial, snapshots[0]):
        np.testing.assert_array_equal(before, after)
    changed = {path for path, a, b in zip(paths[1], snapshots[0], snapshots[1]) if not np.array_equal(a, b)}
    norms = {path for path in paths[1] if "_bn/" in path}
    assert len(norms) == 4 * 27 and not changed & norms  # gamma, beta, moving mean and variance of 27 layers
    assert changed == set(paths[1]) - norms


def test_saved_detector_records_what_it_is_and_refuses_another(tmp_path):
    path = str(tmp_path / "det.weights.h5")
    tiny().save_weights(path)
    same_at_other_size = YOLO("Tiny Yolo", 160, ["raccoon"], 5, [1, 1, 2, 2, 3, 3, 4, 4, 5, 5], load_pretrained=False)
    same_at_other_size.load_weights(path)  # input size may change: the weights do not depend on it
    with pytest.raises(UserError, match=r"different detector: labels \['raccoon'\] \(this one: \['dog'\]\)"):
        YOLO("Tiny Yolo", 128, ["dog"], 5, [1, 1, 2, 2, 3, 3, 4, 4, 5, 5], load_pretrained=False).load_weights(path)
    with pytest.raises(UserError, match=r"backend Tiny Yolo .*this one: MobileNet"):
        YOLO("MobileNet", 128, ["raccoon"], 5, [1, 1, 2, 2, 3, 3, 4, 4, 5, 5], load_pretrained=False).load_weights(path)
    with pytest.raises(UserError, match=r"5 anchors \(this one: 2\)"):
        YOLO("Tiny Yolo", 128, ["raccoon"], 5, [1, 1, 2, 2], load_pretrained=False).load_weights(path)
    with pytest.warns(UserWarning, match="trained with anchors"):
        YOLO("Tiny Yolo", 128, ["raccoon"], 5, [1, 1, 2, 2, 3, 3, 4, 4, 9, 9], load_pretrained=False).load_weights(path)


@pytest.mark.parametrize("head_layers", [0, 2])
def test_detector_assembled_from_a_backend_file_and_a_head_file(tmp_path, head_layers):
    trained = tiny(head_layers=head_layers, head_filters=32)
    for v in trained.model.weights:  # stands in for a trained detector
        v.assign(np.random.default_rng(len(v.path)).normal(0, 0.05, v.shape).astype(np.float32))
    save_backend_weights(trained.backend_model, str(tmp_path / "tiny_yolo_backend.h5"))
    trained.save_head(str(tmp_path / "head.h5"))
    assembled = YOLO.from_parts(str(tmp_path / "tiny_yolo_backend.h5"), str(tmp_path / "head.h5"))
    assert assembled.labels == ["raccoon"] and assembled.anchors == trained.anchors
    x = np.random.default_rng(0).integers(0, 255, (1, 128, 128, 3), dtype=np.uint8)
    np.testing.assert_allclose(
        assembled.inference_model.predict_on_batch(x), trained.inference_model.predict_on_batch(x), atol=1e-5
    )
    with pytest.raises(UserError, match="not a head file"):
        YOLO.from_parts(str(tmp_path / "tiny_yolo_backend.h5"), str(tmp_path / "tiny_yolo_backend.h5"))


def test_head_layers_sit_between_backend_and_detection_conv_and_train_with_a_frozen_backend(tmp_path):
    yolo = tiny(head_layers=2, head_filters=64, freeze_backend=True)
    assert [layer.name for layer in yolo.head()] == ["head_conv_1", "head_norm_1", "head_conv_2", "head_norm_2",
                                                     "DetectionLayer"]  # fmt: skip
    assert yolo.model.get_layer("head_conv_1").kernel.shape == (3, 3, 1024, 64)
    assert yolo.model.get_layer("DetectionLayer").kernel.shape == (1, 1, 64, 5 * 6)
    trainable = {v.path.split("/")[0] for v in yolo.model.trainable_weights}
    assert trainable == {"head_conv_1", "head_norm_1", "head_conv_2", "head_norm_2", "DetectionLayer"}
    path = str(tmp_path / "neck.weights.h5")
    yolo.save_weights(path)
    with pytest.raises(UserError, match=r"head_layers 2, head_filters 64 \(this one: 0, 256\)"):
        tiny().load_weights(path)
    tiny(head_layers=2, head_filters=64).load_weights(path)


def _rewrite_metadata(path, **changes):
    """Edits the detector description in a saved file, as an older or another writer left it."""
    from weight_files import METADATA_KEY

    with h5py.File(path, "a") as f:
        meta = json.loads(f.attrs[METADATA_KEY])
        meta.update(changes)
        f.attrs[METADATA_KEY] = json.dumps(meta)


def test_backend_options_are_compared_as_they_resolve(tmp_path):
    """A converted yolov2-tiny-voc detector records final_filters 1024, Tiny Yolo's default: it loads into
    YOLO(backend="Tiny Yolo") without options (it used to be refused as 'a different detector')."""
    path = str(tmp_path / "tiny-voc.weights.h5")
    tiny(backend_options={"final_filters": 1024}).save_weights(path)
    tiny().load_weights(path)
    _rewrite_metadata(path, backend_options={})  # a file that wrote the options as given, none
    tiny(backend_options={"final_filters": 1024}).load_weights(path)
    _rewrite_metadata(path, backend_options={"final_filters": 512})  # a real difference (yolov2-tiny, COCO)
    with pytest.raises(UserError, match=r"backend Tiny Yolo \{'final_filters': 512\} \(this one: Tiny Yolo "
                                        r"\{'final_filters': 1024\}\)"):  # fmt: skip
        tiny().load_weights(path)


def test_converted_tiny_voc_detector_loads_into_a_plain_tiny_yolo(tmp_path):
    from darknet_reference import cfg_text, random_weights

    from darknet import convert, parse_cfg

    cfg = tmp_path / "yolov2-tiny-voc.cfg"
    cfg.write_text(cfg_text("tiny", classes=1, anchors=(1, 1, 2, 2, 3, 3, 4, 4, 5, 5), size=128))
    data, _ = random_weights(parse_cfg(str(cfg)), np.random.default_rng(0))
    (tmp_path / "yolov2-tiny-voc.weights").write_bytes(data)
    result = convert(str(cfg), str(tmp_path / "yolov2-tiny-voc.weights"), str(tmp_path), labels=["raccoon"])
    tiny().load_weights(result["detector"])
