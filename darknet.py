"""Darknet's .cfg and .weights files, converted into this project's weight files.

python main.py convert --cfg yolov2-voc.cfg --weights yolov2-voc.weights [--out weights/]

A .weights file (darknet's parser.c, load_weights_upto) is a header of int32 major, minor,
revision and `seen` (64 bits when major*10 + minor >= 2, else 32 bits), then, for each
[convolutional] section in cfg order (load_convolutional_weights): the biases, with
batch_normalize also the scales, rolling means and rolling variances, then the kernel as
(filters, channels, size, size); all float32. A classification prefix such as
darknet19_448.conv.23 is such a file that simply ends after its last layer.
"""

import json
import os

import numpy as np

from errors import UserError
from frontend import YOLO
from weight_files import atomic_write, save_backend_weights, save_detector

SECTION_TYPES = ("net", "network", "convolutional", "maxpool", "route", "reorg", "region")
# normalize_cpu: (x - mean) / (sqrt(variance) + .000001f), epsilon outside the square root.
DARKNET_BN_EPSILON = 1e-6


class DarknetError(UserError):
    """A cfg / weights problem, reported without a traceback."""


def parse_cfg(path):
    """-> list of sections, each a dict of its options plus "type" and "line" (where it starts)."""
    if not os.path.exists(path):
        raise DarknetError(f"cfg file not found: {path}")
    sections = []
    with open(path) as f:
        for number, raw in enumerate(f, 1):
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                sections.append({"type": line.strip("[]").strip(), "line": number})
            elif "=" in line and sections:
                key, value = line.split("=", 1)
                sections[-1][key.strip()] = value.strip()
            else:
                raise DarknetError(f"{path}, line {number}: cannot read {line!r}")
    if not sections or sections[0]["type"] not in ("net", "network"):
        raise DarknetError(f"{path}: a darknet cfg starts with a [net] section")
    for s in sections:
        if s["type"] not in SECTION_TYPES:
            raise DarknetError(
                f"{path}, line {s['line']}: section [{s['type']}] is not supported; YOLOv2 cfgs use "
                f"{', '.join(f'[{t}]' for t in SECTION_TYPES[1:])}"
            )
    return sections


def detector_layout(sections, path):
    """What a YOLOv2 cfg describes in this project's terms: backend, its options, input size, anchors, classes."""
    convs = [s for s in sections if s["type"] == "convolutional"]
    regions = [s for s in sections if s["type"] == "region"]
    if not regions or not convs:
        raise DarknetError(f"{path}: no [region] layer: not a YOLOv2 detector cfg")
    region, net = regions[-1], sections[0]
    full = any(s["type"] == "reorg" for s in sections)
    anchors = [float(a) for a in region["anchors"].split(",") if a.strip()]
    return {
        "backend": "Full Yolo" if full else "Tiny Yolo",
        # Tiny YOLO's last backend conv: 1024 filters in yolov2-tiny-voc, 512 in yolov2-tiny (COCO)
        "backend_options": {} if full else {"final_filters": int(convs[-2]["filters"])},
        "input_size": [int(net.get("height", 416)), int(net.get("width", 416))],
        "anchors": anchors,
        "classes": int(region["classes"]),
        "num": int(region["num"]),
        "convs": convs,
    }


def read_weights_file(path):
    """-> (header dict, float32 array of everything after the header)."""
    if not os.path.exists(path):
        raise DarknetError(f"weights file not found: {path}")
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 16:
        raise DarknetError(f"{path}: {len(data)} bytes is too short for a darknet weights file")
    major, minor, revision = (int(v) for v in np.frombuffer(data, "<i4", 3))
    wide_seen = major * 10 + minor >= 2 and major < 1000 and minor < 1000
    seen_bytes = 8 if wide_seen else 4
    seen = int(np.frombuffer(data, "<u8" if wide_seen else "<i4", 1, offset=12)[0])
    body = len(data) - 12 - seen_bytes
    if body % 4:
        raise DarknetError(f"{path}: {body} bytes after the header is not a whole number of float32 values")
    header = {"major": major, "minor": minor, "revision": revision, "seen": seen, "header_bytes": 12 + seen_bytes}
    return header, np.frombuffer(data, "<f4", offset=12 + seen_bytes)


def conv_layer_names(yolo):
    """The detector's conv layers in darknet's cfg order: conv_1 ... conv_N, then the head."""
    backend_convs = sorted(
        (layer for layer in yolo.backend_model.layers if layer.name.startswith("conv_")),
        key=lambda layer: int(layer.name.split("_")[1]),
    )
    return [layer.name for layer in backend_convs] + ["DetectionLayer"]


def check_layout(yolo, layout, path):
    """Every cfg conv must be the same shape as the detector's conv at that position."""
    names = conv_layer_names(yolo)
    if len(names) != len(layout["convs"]):
        raise DarknetError(
            f"{path}: {len(layout['convs'])} convolutional layers, but the {yolo.backend.name} detector has "
            f"{len(names)}; this cfg is not a YOLOv2 network this project can build"
        )
    for name, conv in zip(names, layout["convs"]):
        kernel = _find_layer(yolo, name).kernel.shape
        size, filters = int(conv["size"]), int(conv["filters"])
        if (kernel[0], kernel[3]) != (size, filters):
            raise DarknetError(
                f"{path}, line {conv['line']}: convolutional {filters} filters {size}x{size}, but {name} of the "
                f"{yolo.backend.name} detector is {kernel[3]} filters {kernel[0]}x{kernel[1]}"
            )


def _find_layer(yolo, name):
    model = yolo.model if name == "DetectionLayer" else yolo.backend_model
    return model.get_layer(name)


def split_convs(floats, yolo, layout, weights_path, cfg_path):
    """Cuts the weights body into per-layer darknet arrays -> list of dicts (fewer than the cfg's convs
    when the file is a prefix that ends exactly after a layer)."""
    layers, offset = [], 0
    for name, conv in zip(conv_layer_names(yolo), layout["convs"]):
        if offset == len(floats):
            break  # a prefix such as darknet19_448.conv.23
        kh, kw, channels, filters = _find_layer(yolo, name).kernel.shape
        bn = conv.get("batch_normalize", "0") == "1"
        sizes = [("biases", filters)] + ([(k, filters) for k in ("scales", "mean", "variance")] if bn else [])
        sizes.append(("kernel", filters * channels * kh * kw))
        need = sum(n for _, n in sizes)
        if offset + need > len(floats):
            raise DarknetError(
                f"{weights_path} ends inside convolutional layer {len(layers) + 1} ({cfg_path}, line "
                f"{conv['line']}): it holds {len(floats)} values after the header, the cfg needs "
                f"{offset + need} up to there. Is {cfg_path} the cfg this file was trained with?"
            )
        arrays = {}
        for key, n in sizes:
            arrays[key] = np.asarray(floats[offset : offset + n], np.float64)
            offset += n
        arrays["kernel"] = arrays["kernel"].reshape(filters, channels, kh, kw)
        layers.append({"name": name, "batch_normalize": bn, **arrays})
    if offset < len(floats):
        raise DarknetError(
            f"{weights_path} has {len(floats) - offset} values ({4 * (len(floats) - offset)} bytes) left after the "
            f"last layer of {cfg_path}: the file is for a larger network than this cfg"
        )
    if not layers:
        raise DarknetError(f"{weights_path} holds no layer weights")
    return layers


def keras_weights(layer, keras_epsilon):
    """darknet arrays -> (conv weights, BatchNormalization weights or None) for Keras.

    Keras normalises with sqrt(var + eps), darknet with sqrt(var) + 1e-6; the difference is folded
    into gamma so the converted layer computes darknet's numbers.
    """
    kernel = layer["kernel"].transpose(2, 3, 1, 0).astype(np.float32)  # (out, in, kh, kw) -> (kh, kw, in, out)
    if not layer["batch_normalize"]:
        return [kernel, layer["biases"].astype(np.float32)], None
    variance = np.maximum(layer["variance"], 0.0)
    gamma = layer["scales"] * np.sqrt(variance + keras_epsilon) / (np.sqrt(variance) + DARKNET_BN_EPSILON)
    norm = [gamma, layer["biases"], layer["mean"], variance]
    return [kernel], [a.astype(np.float32) for a in norm]


def assign(yolo, layers):
    for layer in layers:
        name = layer["name"]
        bn_layer = yolo.backend_model.get_layer(name.replace("conv_", "norm_")) if layer["batch_normalize"] else None
        conv, norm = keras_weights(layer, bn_layer.epsilon if bn_layer else 0.0)
        _find_layer(yolo, name).set_weights(conv)
        if bn_layer is not None:
            bn_layer.set_weights(norm)


def convert(cfg_path, weights_path, out_dir="weights", labels=None, backend_only=False):
    """Writes <out>/<name>.weights.h5 (whole detector) + <name>.json (its config), and the backend file.

    labels: class names (their count must be the cfg's classes) or None for "class_<i>".
    Returns {"detector": path or None, "backend": path, "config": path or None, "layers": [...], "missing": [...]}.
    """
    sections = parse_cfg(cfg_path)
    layout = detector_layout(sections, cfg_path)
    if len(layout["anchors"]) != 2 * layout["num"]:
        raise DarknetError(f"{cfg_path}: [region] num={layout['num']} but {len(layout['anchors']) // 2} anchors")
    if labels is not None and len(labels) != layout["classes"]:
        raise DarknetError(
            f"{cfg_path} has {layout['classes']} classes but {len(labels)} labels were given. Pass the matching "
            "names file (--labels voc.names / coco.names), or --backend_only to keep the backend and train a "
            "new head for your labels."
        )
    labels = labels or [f"class_{i}" for i in range(layout["classes"])]
    yolo = YOLO(backend=layout["backend"], input_size=layout["input_size"], labels=labels, max_box_per_image=1,
                anchors=layout["anchors"], backend_options=layout["backend_options"], load_pretrained=False)  # fmt: skip
    check_layout(yolo, layout, cfg_path)
    header, floats = read_weights_file(weights_path)
    layers = split_convs(floats, yolo, layout, weights_path, cfg_path)
    assign(yolo, layers)
    names = conv_layer_names(yolo)
    converted = [layer["name"] for layer in layers]
    missing = names[len(layers) :]
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.basename(weights_path).split(".weights")[0]
    result = {"header": header, "layers": converted, "missing": missing, "detector": None, "config": None}
    backend_missing = [
        n for name in missing if name != "DetectionLayer" for n in (name, name.replace("conv_", "norm_"))
    ]
    result["backend"] = os.path.join(out_dir, yolo.backend.weights_file)
    save_backend_weights(yolo.backend_model, result["backend"], not_pretrained=backend_missing)
    if not missing and not backend_only:
        result["detector"] = os.path.join(out_dir, f"{stem}.weights.h5")
        save_detector(yolo, result["detector"])
        result["config"] = os.path.join(out_dir, f"{stem}.json")
        model = {"backend": layout["backend"], "backend_options": layout["backend_options"],
                 "input_size": layout["input_size"], "anchors": layout["anchors"], "labels": labels}  # fmt: skip
        with atomic_write(result["config"]) as tmp, open(tmp, "w") as f:
            json.dump({"model": model}, f, indent=2)
    return result
