"""Image channels: gray, RGBA and 16-bit inputs, and detectors with a 1-channel first layer built from
pretrained RGB weights."""

import json
import os
import warnings

import cv2
import h5py
import keras
import numpy as np
import pytest

import main as cli
from backends import Backend, get_backend, gray_first_layer, layers_with_weights
from custom_layers import Normalization
from errors import UserError
from frontend import YOLO
from images import decode_image, read_rgb, to_channels, to_rgb_uint8
from weight_files import read_metadata, save_backend_weights

CAFFE_LIKE = ([1.0, 0.5, 2.0], [-104.0, -117.0, -124.0], True)  # per-channel scale and offset, BGR


def rgb_and_gray_layers(kernel_size, filters, use_bias, normalization, seed=0):
    """The same first layer built for RGB and for gray, the gray one from the RGB weights."""
    rng = np.random.default_rng(seed)
    rgb = keras.layers.Conv2D(filters, kernel_size, padding="same", use_bias=use_bias)
    rgb.build((None, 12, 12, 3))
    rgb.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in rgb.weights])
    gray = keras.layers.Conv2D(filters, kernel_size, padding="same", use_bias=use_bias)
    gray.build((None, 12, 12, 1))
    arrays, shift = gray_first_layer(rgb.get_weights(), *normalization[:2])
    gray.set_weights(arrays)
    return rgb, gray, shift


def random_backend_file(model, path, scale=1.0):
    """`model`'s weights set to fixed random values (BatchNorm variances kept positive), saved as a backend file."""
    rng = np.random.default_rng(0)
    for v in model.weights:
        v.assign(rng.normal(size=v.shape).astype(np.float32) * scale + (1.0 if "variance" in v.path else 0.0))
    save_backend_weights(model, str(path))
    return str(path)


def gray_image(seed=1):
    return np.random.default_rng(seed).integers(0, 256, (2, 12, 12, 1)).astype(np.float32)


def test_gray_first_layer_equals_the_rgb_layer_on_replicated_gray_away_from_the_border():
    rgb, gray, shift = rgb_and_gray_layers(3, 4, True, CAFFE_LIKE)
    assert shift is None  # taken by the bias
    image = gray_image()
    backend = Backend()
    backend.scale, backend.offset, backend.bgr = CAFFE_LIKE
    gray_norm = Normalization(*backend.normalization(1))
    expected = keras.ops.convert_to_numpy(rgb(Normalization(*CAFFE_LIKE)(np.repeat(image, 3, axis=-1))))
    got = keras.ops.convert_to_numpy(gray(gray_norm(image)))
    np.testing.assert_allclose(got[:, 1:-1, 1:-1], expected[:, 1:-1, 1:-1], rtol=1e-4, atol=1e-3)
    assert np.abs(got[:, 0] - expected[:, 0]).max() > 1  # zero padding differs in the two input spaces


def test_uniform_normalisation_is_the_plain_sum_over_input_channels():
    rgb, gray, shift = rgb_and_gray_layers(3, 4, False, (1 / 127.5, -1.0, False))
    np.testing.assert_allclose(gray.kernel.numpy()[:, :, 0], rgb.kernel.numpy().sum(axis=2), rtol=1e-6)
    np.testing.assert_allclose(shift, 0, atol=1e-4)


@pytest.mark.slow
def test_a_layer_without_bias_passes_its_shift_to_the_batchnorm_after_it(tmp_path):
    """DenseNet201's first convolution has no bias and TORCH-style per-channel normalisation."""
    source = get_backend("DenseNet201").build((96, 96, 3))
    path = random_backend_file(source, tmp_path / "densenet201_backend.h5", scale=0.1)
    yolo = YOLO("DenseNet201", 96, ["a"], 2, [1, 1], backend_weights=path, input_channels=1)
    conv = [layer.name for layer in layers_with_weights(yolo.backend_model)][:2]
    assert conv == ["conv1_conv", "conv1_bn"]

    image = np.random.default_rng(1).integers(0, 256, (1, 96, 96, 1)).astype(np.float32)

    def first_batchnorm(backend_model, x):
        net = backend_model.get_layer("densenet201")
        x = backend_model.get_layer("normalize")(x)
        return keras.ops.convert_to_numpy(keras.Model(net.input, net.get_layer("conv1_bn").output)(x))

    expected = first_batchnorm(source, np.repeat(image, 3, axis=-1))
    got = first_batchnorm(yolo.backend_model, image)
    interior = (slice(None), slice(2, -2), slice(2, -2))
    np.testing.assert_allclose(got[interior], expected[interior], rtol=1e-4, atol=1e-3)
    bns = [m.get_layer("densenet201").get_layer("conv1_bn").moving_mean.numpy() for m in (source, yolo.backend_model)]
    assert not np.allclose(*bns)  # the shift went there


def test_gray_detector_from_an_rgb_backend_file_sees_what_the_rgb_one_sees(tmp_path):
    rgb = YOLO("Tiny Yolo", 64, ["a"], 2, [1, 1], load_pretrained=False, freeze_backend=False)
    path = random_backend_file(rgb.backend_model, tmp_path / "tiny_yolo_backend.h5", scale=0.1)
    gray = YOLO("Tiny Yolo", 64, ["a"], 2, [1, 1], backend_weights=path, input_channels=1)
    assert gray.inference_model.input.shape[-1] == 1
    assert gray.backend_model.get_layer("conv_1").kernel.shape == (3, 3, 1, 16)
    image = np.random.default_rng(1).integers(0, 256, (2, 64, 64, 1)).astype(np.uint8)
    # darknet scales every channel alike, so even the border agrees
    np.testing.assert_allclose(keras.ops.convert_to_numpy(gray.backend_model(image)),
                               keras.ops.convert_to_numpy(rgb.backend_model(np.repeat(image, 3, -1))),
                               atol=1e-5)  # fmt: skip

    gray.save_weights(str(tmp_path / "gray.weights.h5"))
    assert read_metadata(str(tmp_path / "gray.weights.h5"))["input_channels"] == 1
    with pytest.raises(UserError, match=r"1 input channels \(this one: 3\)"):
        rgb.load_weights(str(tmp_path / "gray.weights.h5"))
    # detect() turns colour images gray for it
    records = gray.detect([np.zeros((50, 70, 3), np.uint8)], score_threshold=0.0)
    assert records[0][0].shape[1] == 4


def test_imagenet_download_goes_through_the_same_conversion(monkeypatch):
    """Keras builds its ImageNet weights for RGB only; a gray MobileNetV2 takes them converted."""
    real = keras.applications.MobileNetV2
    fake_weights = {}

    def fake_download(weights=None, **kwargs):  # Keras' download, offline: fixed random "ImageNet" weights
        net = real(weights=None, **kwargs)
        if weights == "imagenet":
            assert kwargs["input_shape"][-1] == 3
            rng = np.random.default_rng(0)
            for v in net.weights:
                v.assign(rng.normal(size=v.shape).astype(np.float32))
            fake_weights["Conv1"] = net.get_layer("Conv1").kernel.numpy()
        return net

    monkeypatch.setattr(keras.applications, "MobileNetV2", fake_download)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no search for weights/mobilenetv2_backend.h5 on top of the download
        yolo = YOLO("MobileNetV2", 64, ["a"], 2, [1, 1], backend_options={"weights": "imagenet"}, input_channels=1)
    assert yolo.backend_weights == "Keras' ImageNet download"  # counts as pretrained: a frozen backend may train
    kernel = next(layer for layer in layers_with_weights(yolo.backend_model) if layer.name == "Conv1").kernel.numpy()
    np.testing.assert_allclose(kernel[:, :, 0], fake_weights["Conv1"].sum(axis=2), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_auto_named_layers_load_from_a_file_written_by_another_build(tmp_path):
    """ConvNeXt's last LayerNormalization is named by Keras, differently in every build."""
    source = get_backend("ConvNeXtTiny").build((64, 64, 3))
    path = random_backend_file(source, tmp_path / "convnexttiny_backend.h5")
    yolo = YOLO("ConvNeXtTiny", 64, ["a"], 2, [1, 1], backend_weights=path)
    names = {layer.name for layer in layers_with_weights(yolo.backend_model)}
    assert names != {layer.name for layer in layers_with_weights(source)}
    for a, b in zip(source.weights, yolo.backend_model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def write_png(path, array):
    assert cv2.imwrite(str(path), array)
    return str(path)


def test_rgba_and_16_bit_files_are_converted_with_one_notice_each(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("images._notices", set())
    rng = np.random.default_rng(0)
    bgra = rng.integers(0, 256, (6, 8, 4)).astype(np.uint8)
    deep = rng.integers(0, 65536, (6, 8)).astype(np.uint16)
    rgba_paths = [write_png(tmp_path / f"rgba{i}.png", bgra) for i in range(2)]
    deep_path = write_png(tmp_path / "deep.png", deep)
    gray_path = write_png(tmp_path / "gray.png", (deep >> 8).astype(np.uint8))

    np.testing.assert_array_equal(decode_image(rgba_paths[0]), bgra[..., 2::-1])  # alpha dropped, RGB order
    decode_image(rgba_paths[1])
    np.testing.assert_array_equal(decode_image(deep_path), np.repeat((deep >> 8)[..., None], 3, axis=2))
    np.testing.assert_array_equal(decode_image(gray_path), decode_image(deep_path))
    notes = capsys.readouterr().err.strip().splitlines()
    assert len(notes) == 2, notes
    assert "rgba0.png has an alpha channel" in notes[0] and "deep.png has 16-bit pixels" in notes[1]


def test_arrays_of_other_kinds_become_rgb_uint8(capsys, monkeypatch):
    monkeypatch.setattr("images._notices", set())
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(to_rgb_uint8(gray[..., None]), np.repeat(gray[..., None], 3, axis=2))
    np.testing.assert_array_equal(read_rgb(gray), np.repeat(gray[..., None], 3, axis=2))
    np.testing.assert_array_equal(to_rgb_uint8(np.full((2, 2, 4), 7, np.uint8)), np.full((2, 2, 3), 7))
    assert to_rgb_uint8(np.full((2, 2, 3), 65535, np.uint16)).max() == 255
    assert len(capsys.readouterr().err.strip().splitlines()) == 2
    with pytest.raises(UserError, match="float32"):
        to_rgb_uint8(np.zeros((2, 2, 3), np.float32))
    with pytest.raises(UserError, match=r"shape \(2, 2, 5\)"):
        to_rgb_uint8(np.zeros((2, 2, 5), np.uint8))
    assert to_channels(np.zeros((4, 5, 3), np.uint8), 1).shape == (4, 5, 1)


@pytest.mark.slow
def test_gray_training_run_on_rgba_and_16_bit_images(tmp_path, capsys, monkeypatch, demo_like_config):
    monkeypatch.setattr("images._notices", set())
    path, config = demo_like_config(tmp_path, train_count=8, valid_count=4)
    for folder in ("train", "valid"):
        images = tmp_path / "shapes" / folder / "images"
        for i, name in enumerate(sorted(os.listdir(images))):
            gray = cv2.imread(str(images / name), cv2.IMREAD_GRAYSCALE)
            png = [cv2.cvtColor(gray, cv2.COLOR_GRAY2BGRA), gray.astype(np.uint16) * 257][i % 2]
            write_png(images / name.replace(".jpg", ".png"), png)
            os.remove(images / name)
    config["model"]["input_channels"] = 1
    (tmp_path / "config.json").write_text(json.dumps(config))
    cli.main(["--config", path, "--verbose", "0"])
    err = capsys.readouterr().err
    assert "has an alpha channel" in err and "has 16-bit pixels" in err
    run = tmp_path / "runs" / "t"
    assert read_metadata(str(run / "best.weights.h5"))["input_channels"] == 1
    with h5py.File(run / "best.weights.h5") as f:
        shapes = []
        f.visititems(lambda name, item: shapes.append(item.shape) if isinstance(item, h5py.Dataset) else None)
    assert (3, 3, 1, 8) in shapes  # MobileNet alpha 0.25's first convolution takes one channel
    assert len(os.listdir(run / "predictions")) == 2
