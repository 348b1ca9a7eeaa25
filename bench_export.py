"""`python main.py bench --export -w W`: every export format written, timed and run on this machine next to the
Keras graph, in one run. Per format: the seconds to write it (conversion and the check included), the file size,
img/s at batch 1 and at `batch`, what the export's check reported (largest differences for float32, agreement for
reduced precision) and the VOC mAP@0.5 on the config's validation set from the file's own detections.

All files are exported at the AP score floor (0.005), so their mAP compares with `main.py evaluate`'s and their
NMS has the most boxes to sort.
"""

import json
import os
import time

from bench import images_per_second
from config import detection_args
from datasets import load_datasets
from deployed import load
from evaluate import AP_SCORE_FLOOR, evaluate_detections, predict_instances
from export import CALIBRATION_IMAGES, default_path, export, export_graph, network_inputs, readable
from weight_files import atomic_write

VARIANTS = (("saved_model", "float32"), ("onnx", "float32"), ("tflite", "float32"), ("tflite", "float16"),
            ("tflite", "dynamic"), ("tflite", "int8"))  # fmt: skip


def run_export_bench(yolo, config, weights, out_dir, repeats=10, batch=32, variants=VARIANTS):
    """-> {"detector", "batch", "validation_images", "rows": [{"format", "quantization", "write_s", "size_mb",
    "batch1_img_s", "batch_img_s", "check", "map"}]}, the Keras graph first."""
    train_set, valid_set, _ = load_datasets(config)
    settings = detection_args(config, AP_SCORE_FLOOR)
    calibration = readable([i["filename"] for i in train_set[:: max(1, len(train_set) // CALIBRATION_IMAGES)]])
    check_images = readable([i["filename"] for i in valid_set[:4]])
    images = network_inputs(yolo, readable([i["filename"] for i in (valid_set or train_set)[:batch]]))

    def map_of(detector):
        instances, detections = predict_instances(detector, valid_set, config, progress=False)
        return evaluate_detections(instances, detections, yolo.labels, "voc", settings["score_threshold"])["map"]

    def rates(run):
        return images_per_second(lambda: run(images[:1]), 1, repeats), images_per_second(
            lambda: run(images), len(images), repeats
        )

    graph = export_graph(yolo, **settings)
    one, many = rates(graph.predict_on_batch)
    rows = [{"format": "keras", "quantization": "float32", "write_s": None, "size_mb": None, "batch1_img_s": one,
             "batch_img_s": many, "check": None, "map": map_of(yolo)}]  # fmt: skip
    for format, quantization in variants:
        path = os.path.join(out_dir, os.path.basename(default_path(weights, format, quantization)))
        start = time.perf_counter()
        check = export(yolo, path, settings, format, quantization, check_images=check_images,
                       calibration_images=calibration)  # fmt: skip
        write_s = time.perf_counter() - start
        deployed = load(path)
        one, many = rates(deployed)
        rows.append({"format": format, "quantization": quantization, "write_s": write_s, "size_mb": size_mb(path),
                     "batch1_img_s": one, "batch_img_s": many, "check": check, "map": map_of(deployed)})  # fmt: skip
    return {"detector": f"{yolo.backend.name} {yolo.input_w}x{yolo.input_h}", "weights": weights, "batch": len(images),
            "validation_images": len(valid_set), "cpus": os.cpu_count(), "rows": rows}  # fmt: skip


def size_mb(path):
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files) / 1e6
    return os.path.getsize(path) / 1e6


def format_export_bench(result):
    keras_row = result["rows"][0]
    lines = [
        f"Exports of {result['weights']} ({result['detector']}, decoding + NMS inside, score floor {AP_SCORE_FLOOR}), "
        f"on {result['cpus']} CPUs; mAP@0.5 on {result['validation_images']} validation images:",
        f"{'format':18s} {'write s':>8s} {'MB':>6s} {'img/s b1':>9s} {'img/s b' + str(result['batch']):>10s} "
        f"{'x keras':>8s} {'mAP':>7s} {'mAP-keras':>9s}  check against the Keras graph",
    ]
    for row in result["rows"]:
        name = row["format"] + ("" if row["quantization"] == "float32" else " " + row["quantization"])
        write = "-" if row["write_s"] is None else f"{row['write_s']:.1f}"
        size = "-" if row["size_mb"] is None else f"{row['size_mb']:.2f}"
        check = "" if row["check"] is None else ", ".join(f"{k} {v:.3g}" for k, v in row["check"].items())
        lines.append(f"{name:18s} {write:>8s} {size:>6s} {row['batch1_img_s']:9.1f} {row['batch_img_s']:10.1f} "
                     f"{row['batch_img_s'] / keras_row['batch_img_s']:8.2f} {row['map']:7.4f} "
                     f"{row['map'] - keras_row['map']:+9.4f}  {check}".rstrip())  # fmt: skip
    return "\n".join(lines)


def write_export_bench(result, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_write(path) as tmp, open(tmp, "w") as f:
        json.dump(result, f, indent=1)
    return path
