"""main.py bench: the figures it prints and stores, their arithmetic (ratio, FLOPs by hand), bookkeeping."""

import json

import pytest

import bench_heads
import main as cli
from anchors import find_anchors, instance_shapes, to_grid_units
from bench import bookkeeping
from config import build_config, generator_args
from datasets import load_datasets
from demo_data import write_split


@pytest.mark.slow
def test_bench_reports_consistent_figures(tmp_path, capsys, demo_like_config):
    path, config = demo_like_config(tmp_path, train_count=8, valid_count=2)
    config["model"].update(input_size=64, freeze_backend=True, anchors=[1.0, 1.0, 2.0, 2.0])
    config["train"]["batch_size"] = 2
    (tmp_path / "bench.json").write_text(json.dumps(config))
    result = cli.main(["bench", "--config", str(tmp_path / "bench.json"), "--steps", "2", "--output",
                       str(tmp_path / "out" / "bench.json")])  # fmt: skip
    assert json.loads((tmp_path / "out" / "bench.json").read_text()) == result
    out = capsys.readouterr().out
    assert "input pipeline alone" in out and "fit / step" in out and "latency, batch 1" in out
    assert f"loader threads cap near {1e3 / result['one_loader_gil_ms']:,.0f} img/s" in out
    for key in ("pipeline_img_s", "decode_img_s", "step_img_s", "fit_img_s", "inference_img_s", "latency_ms"):
        assert result[key] > 0, key
    assert f"{result['pipeline_img_s'] / result['decode_img_s']:.2f} x decode alone" in out
    assert abs(result["fit_over_step"] - result["fit_img_s"] / result["step_img_s"]) < 1e-9
    # frozen MobileNet 0.25 at 64 px: only the 1x1 head trains, 2 x 2 cells x 256 inputs x 2 anchors x (5 + 3)
    head_flops = 2 * (2 * 2) * 256 * (2 * 8)
    backward = result["training_gflops_per_image"] - result["gflops_per_image"]
    assert abs(backward * 1e9 - 2 * head_flops) < 1e-3
    assert result["trainable_parameters"] == 256 * 16 + 16
    assert abs(result["inference_tflop_s"] - result["gflops_per_image"] * result["inference_img_s"] / 1e3) < 1e-9


@pytest.mark.slow
def test_bench_runs_with_xla_at_the_configured_size_under_multi_scale(tmp_path, capsys, demo_like_config):
    path, config = demo_like_config(tmp_path, train_count=8, valid_count=2)
    config["model"].update(input_size=64, freeze_backend=True, anchors=[1.0, 1.0, 2.0, 2.0])
    config["train"].update(batch_size=2, jit_compile=True, run_eagerly=False, multi_scale=True)
    (tmp_path / "bench.json").write_text(json.dumps(config))
    result = cli.main(["bench", "--config", str(tmp_path / "bench.json"), "--steps", "1", "--output",
                       str(tmp_path / "bench-out.json")])  # fmt: skip
    out = capsys.readouterr().out
    assert result["jit_compile"] is True and "float32, XLA on" in out  # train.jit_compile reaches model.compile
    assert "train.multi_scale is off for it" in out and result["input_size"] == [64, 64]


def test_one_loader_counts_opencv_time_apart_and_puts_opencv_back(tmp_path, monkeypatch):
    """A warpAffine slowed by 20 ms (one per image) must land in OpenCV's share, not in the GIL-holding part."""
    import time

    import cv2

    from batch_maker import BatchMaker
    from bench import OPENCV_CALLS, one_loader
    from preprocessing import TargetLayout, parse_annotation

    labels = ["ellipse", "rectangle", "triangle"]
    write_split(str(tmp_path / "data"), 4, seed=5, size=(96, 128))
    instances, _ = parse_annotation(str(tmp_path / "data" / "annotations"), str(tmp_path / "data" / "images"), labels)
    args = generator_args(build_config({}), "train")
    maker = BatchMaker(instances, TargetLayout(labels, (64, 64), (2, 2), [1.0, 1.0, 2.0, 2.0], 6, 3), 2,
                       args["augmentation"], True, 1, 0, True, None, 1)  # fmt: skip
    warp = cv2.warpAffine

    def slow_warp(*args, **kwargs):
        time.sleep(0.02)
        return warp(*args, **kwargs)

    monkeypatch.setattr(cv2, "warpAffine", slow_warp)
    originals, threads = {name: getattr(cv2, name) for name in OPENCV_CALLS}, cv2.getNumThreads()
    result = one_loader(maker, 3)
    assert {name: getattr(cv2, name) for name in OPENCV_CALLS} == originals and cv2.getNumThreads() == threads
    assert result["one_loader_ms"] - result["one_loader_gil_ms"] >= 20
    assert 0 < result["one_loader_gil_ms"] < 20
    assert result["one_loader_img_s"] * result["one_loader_ms"] == pytest.approx(1e3)


def test_bookkeeping_parses_every_file_and_scores_every_detection():
    result = bookkeeping(n_files=40, n_images=10, n_classes=4, per_image=7)
    assert result["parse_files"] == 40 and result["parse_instances"] == 40 and result["eval_detections"] == 70
    assert result["parse_s"] > 0 and result["eval_s"] > 0


@pytest.mark.parametrize("seed", [0, 3])
def test_bench_heads_anchors_come_from_the_training_part_main_py_will_use(tmp_path, seed):
    """--seed moves main.py's 80/20 split; the anchors must follow it, or a seed compares different anchors too."""
    write_split(str(tmp_path / "data"), 20, seed=5, size=(128, 128))
    args = bench_heads.parse_args(["--data", str(tmp_path / "data"), "--labels", "ellipse", "rectangle", "triangle",
                                   "--backend", "Tiny Yolo", "--weights", "none", "--input_size", "64",
                                   "--seed", str(seed), "--out", str(tmp_path / "runs")])  # fmt: skip
    config = bench_heads.base_config(args)
    assert config["train"]["seed"] == seed
    train, _, _ = load_datasets(build_config(config))
    expected = to_grid_units(find_anchors(instance_shapes(train), 5)[0], (2, 2))
    assert config["model"]["anchors"] == pytest.approx(expected, abs=1e-9)
