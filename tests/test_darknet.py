"""darknet cfg + .weights conversion, checked against a numpy darknet forward pass written from its C source."""

import os

import cv2
import numpy as np
import pytest
from conftest import shared_path
from darknet_reference import cfg_text, forward, random_weights

import main as cli
from config import load_config
from darknet import DarknetError, convert, parse_cfg, read_weights_file
from frontend import YOLO

VARIANTS = {
    "yolov2-voc": {"kind": "full", "classes": 20},
    "yolov2-tiny-voc": {"kind": "tiny", "classes": 20},
    "yolov2-tiny": {"kind": "tiny", "classes": 80, "tiny_final": 512,
                    "anchors": (0.57273, 0.677385, 1.87446, 2.06253, 3.33843, 5.47434, 7.88282, 3.52778, 9.77052,
                                9.16828)},
}  # fmt: skip


def write_model(tmp_path, name, rng, truncate_convs=None, **header):
    cfg = tmp_path / f"{name}.cfg"
    cfg.write_text(cfg_text(**VARIANTS[name]))
    sections = parse_cfg(str(cfg))
    data, convs = random_weights(sections, rng, **header)
    if truncate_convs is not None:
        keep = header_bytes(header) + 4 * sum(sum(a.size for a in c.values()) for c in convs[:truncate_convs])
        data, convs = data[:keep], convs[:truncate_convs]
    weights = tmp_path / f"{name}.weights"
    weights.write_bytes(data)
    return str(cfg), str(weights), sections, convs


def header_bytes(header):
    return 20 if header.get("major", 0) * 10 + header.get("minor", 2) >= 2 else 16


def converted_detector(result, input_size):
    config = load_config(result["config"])
    config["model"]["input_size"] = input_size
    yolo = YOLO.from_config(config, load_pretrained=False)
    yolo.load_weights(result["detector"])
    return yolo


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n == "yolov2-voc" else n for n in VARIANTS]
)
def test_converted_model_reproduces_darknet(tmp_path, name):
    cfg, weights, sections, convs = write_model(tmp_path, name, np.random.default_rng(0))
    result = convert(cfg, weights, str(tmp_path / "out"))
    assert result["missing"] == [] and os.path.exists(result["backend"])
    # a different input size than the cfg's, non-square: the weights do not depend on it
    yolo = converted_detector(result, [64, 96])
    image = np.random.default_rng(1).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    ours = yolo.inference_model.predict_on_batch(image[None])[0]
    gh, gw = ours.shape[:2]
    ours = ours.reshape(gh, gw, -1).transpose(2, 0, 1)  # darknet's channel n * (5 + classes) + entry
    reference = forward(sections, convs, image.transpose(2, 0, 1) / 255.0)
    assert reference.shape == ours.shape
    assert np.abs(reference).max() > 0.5  # a non-trivial signal reached the output
    np.testing.assert_allclose(ours, reference, atol=1e-4, rtol=0)


def test_header_versions_and_seen_width(tmp_path):
    rng = np.random.default_rng(0)
    _, old, _, _ = write_model(tmp_path, "yolov2-tiny-voc", rng, major=0, minor=1, seen=1234)
    header, floats = read_weights_file(old)
    assert (header["major"], header["minor"], header["seen"], header["header_bytes"]) == (0, 1, 1234, 16)
    _, new, _, _ = write_model(tmp_path, "yolov2-tiny-voc", rng, major=0, minor=2, seen=2**40)
    header, _ = read_weights_file(new)
    assert (header["seen"], header["header_bytes"]) == (2**40, 20)


@pytest.mark.slow
def test_classification_prefix_converts_the_layers_it_covers(tmp_path):
    """Like darknet19_448.conv.23 read with yolov2-voc.cfg: the first 18 convs, then the file ends."""
    cfg, weights, _, convs = write_model(tmp_path, "yolov2-voc", np.random.default_rng(0), truncate_convs=18)
    result = convert(cfg, weights, str(tmp_path / "out"))
    assert result["layers"] == [f"conv_{i}" for i in range(1, 19)]
    assert result["missing"] == ["conv_19", "conv_20", "conv_21", "conv_22", "DetectionLayer"]
    assert result["detector"] is None  # no whole detector from a prefix
    yolo = YOLO("Full Yolo", 64, ["a"], 1, [1, 1], backend_weights=result["backend"], freeze_backend=True)
    kernel = yolo.backend_model.get_layer("conv_18").get_weights()[0]
    np.testing.assert_allclose(kernel, convs[17]["kernel"].transpose(2, 3, 1, 0), rtol=1e-6)
    # frozen backend: the pretrained layers are fixed, the ones the file did not cover still train
    trainable = {v.path.split("/")[0] for v in yolo.backend_model.trainable_variables}
    assert trainable == {"conv_19", "conv_20", "conv_21", "conv_22", "norm_19", "norm_20", "norm_21", "norm_22"}


@pytest.mark.parametrize(
    "damage, message",
    [
        # each builds the full yolov2-voc model (a large backbone)
        pytest.param(lambda data: data[:-12], "ends inside convolutional layer 23", marks=pytest.mark.slow),
        pytest.param(
            lambda data: data + b"\0" * 8, r"2 values \(8 bytes\) left after the last layer", marks=pytest.mark.slow
        ),
        pytest.param(lambda data: data[:-2], "not a whole number of float32", marks=pytest.mark.slow),
    ],
)
def test_wrong_file_for_the_cfg_is_a_clear_error(tmp_path, damage, message):
    cfg, weights, _, _ = write_model(tmp_path, "yolov2-voc", np.random.default_rng(0))
    with open(weights, "rb") as f:
        data = f.read()
    with open(weights, "wb") as f:
        f.write(damage(data))
    with pytest.raises(DarknetError, match=message):
        convert(cfg, weights, str(tmp_path / "out"))


def test_unsupported_section_and_label_mismatch_are_clear_errors(tmp_path):
    cfg, weights, _, _ = write_model(tmp_path, "yolov2-tiny-voc", np.random.default_rng(0))
    with pytest.raises(DarknetError, match=r"20 classes but 3 labels.*--backend_only"):
        convert(cfg, weights, str(tmp_path / "out"), labels=["a", "b", "c"])
    text = open(cfg).read().replace("[reorg]", "[shortcut]", 1)
    bad = tmp_path / "bad.cfg"
    bad.write_text(text.replace("[maxpool]", "[shortcut]", 1))
    with pytest.raises(DarknetError, match=r"line \d+: section \[shortcut\] is not supported"):
        convert(str(bad), weights, str(tmp_path / "out"))
    other = tmp_path / "other.cfg"
    other.write_text(cfg_text(kind="tiny", tiny_final=512))
    with pytest.raises(DarknetError, match="left after the last layer"):
        convert(str(other), weights, str(tmp_path / "out"))


@pytest.mark.parametrize("name", ["yolov2-voc", "yolov2", "yolov2-tiny-voc", "yolov2-tiny"])
def test_generated_cfgs_have_darknets_layers(tmp_path, name):
    """The cfg text these tests generate has the same layers as darknet's own cfg files."""
    path = shared_path("data", "darknet", "cfg", f"{name}.cfg")
    if path is None:
        pytest.skip("../shared/data/darknet/cfg is not here")
    variant = VARIANTS.get(name, {"kind": "full", "classes": 80, "anchors": VARIANTS["yolov2-tiny"]["anchors"]})
    (tmp_path / "ours.cfg").write_text(cfg_text(**variant))
    keys = ("type", "batch_normalize", "filters", "size", "stride", "activation", "layers", "classes", "num")
    real, ours = parse_cfg(path)[1:], parse_cfg(str(tmp_path / "ours.cfg"))[1:]
    assert [{k: s.get(k) for k in keys} for s in real] == [{k: s.get(k) for k in keys} for s in ours]


@pytest.mark.slow
def test_convert_command_then_predict_with_the_written_config(tmp_path, capsys):
    cfg, weights, _, _ = write_model(tmp_path, "yolov2-tiny", np.random.default_rng(0))
    with pytest.raises(SystemExit):  # 80 classes, the default config has 20 labels
        cli.main(["convert", "--cfg", cfg, "--weights", weights, "--out", str(tmp_path / "w")])
    assert "--backend_only" in capsys.readouterr().err
    names = tmp_path / "coco.names"
    names.write_text("\n".join(f"thing{i}" for i in range(80)))
    result = cli.main(["convert", "--cfg", cfg, "--weights", weights, "--out", str(tmp_path / "w"),
                       "--labels", str(names)])  # fmt: skip
    assert "Detector weights" in capsys.readouterr().out
    image = tmp_path / "img.jpg"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 255, (100, 150, 3), dtype=np.uint8))
    records = cli.main(["predict", "-c", result["config"], "-w", result["detector"], "-i", str(image),
                        "--threshold", "0.0", "--output", str(tmp_path / "p")])  # fmt: skip
    assert records and all(r["label"].startswith("thing") for r in records)
    backend_only = cli.main(["convert", "--cfg", cfg, "--weights", weights, "--out", str(tmp_path / "b"),
                             "--backend_only"])  # fmt: skip
    assert backend_only["detector"] is None and os.path.exists(backend_only["backend"])
