"""Weight files: every format the project reads and writes, and the one way each is written.

* backend files (model.backend_weights, weights/<backend>_backend.h5): Keras 2's HDF5 layout, read by
  layer name: keras-yolo2's files, Keras applications' *_notop.h5, and the files `convert` writes;
* detector files (runs/NAME/best.weights.h5): Keras 3's .weights.h5 of the whole training model, with a
  JSON attribute recording which detector it is (backend, input size, labels, anchors, head);
* keras-yolo2 checkpoints (full_yolo_raccoon.h5): Keras 2 HDF5 with the backend as one nested model,
  then DetectionLayer; they load as detector files;
* head files (YOLO.save_head): one group per layer after the backend, with the detector's description.

Every writer in the project goes through atomic_write: the file is written aside and renamed over the
old one, so a crash mid-write leaves the previous version whole.
"""

import contextlib
import json
import os
import warnings

import h5py
import numpy as np

from backends import assign_by_name, get_backend, layers_with_weights
from errors import UserError

DETECTOR_VS_BACKEND = (
    "A backend file holds only the feature extractor (model.backend_weights, e.g. weights/full_yolo_backend.h5); "
    "a detector file holds backend and head (train.pretrained_weights or -w, e.g. runs/NAME/best.weights.h5)."
)
# model.backend_weights value that trains the backend from its random initialisation, ignoring weights/
FROM_SCRATCH = "none"
METADATA_KEY = "yolov2_detector"
KERAS_SUFFIX = ".weights.h5"  # Keras 3 refuses to save weights under any other ending


class WeightsError(UserError):
    """A weights file that is missing, unreadable, or of another detector."""


@contextlib.contextmanager
def atomic_write(path, keep_previous=None):
    """`with atomic_write(path) as tmp:` write `tmp`; when the block ends without an error, `tmp` is flushed to
    disk and replaces `path` in one rename (and the folder entry is flushed too), so a crash or a kill at any
    moment leaves the old file or the new one. Else `tmp` is removed and `path` is left as it was. With
    `keep_previous`, the file replaced is kept under that name first."""
    base = path[: -len(KERAS_SUFFIX)] if path.endswith(KERAS_SUFFIX) else None
    tmp = base + ".tmp" + KERAS_SUFFIX if base is not None else path + ".tmp"
    try:
        yield tmp
        fsync(tmp)
        if keep_previous and os.path.exists(path):
            os.replace(path, keep_previous)
        os.replace(tmp, path)
        fsync(os.path.dirname(os.path.abspath(path)))
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def fsync(path):
    """Flushes a file's data, or a folder's entries, to the disk."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot sync a folder
        pass
    finally:
        os.close(fd)


def open_h5(path, what="weights file"):
    """h5py.File(path, "r"), or a WeightsError that says why not (missing, a folder, not HDF5)."""
    if not os.path.exists(path):
        raise WeightsError(f"{what[0].upper() + what[1:]} not found: {path}")
    if os.path.isdir(path):
        raise WeightsError(f"{path} is not a {what} (it is a folder)")
    if os.path.getsize(path) == 0:
        raise WeightsError(f"{path} is not a {what} (it is empty: zero bytes)")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        reason = str(e).split("(", 1)[-1].rstrip(")") if "(" in str(e) else str(e)
        raise WeightsError(f"{path} is not a {what} (not readable HDF5: {reason})") from None
    declared, size = declared_bytes(f), os.path.getsize(path)
    if declared > max(16 * size, 64 * 2**20):  # HDF5 lets a tiny file declare arrays it never stored
        f.close()
        raise WeightsError(f"{path} is not a {what} (it declares {declared / 2**20:,.0f} MiB of arrays in a "
                           f"{size / 2**20:.1f} MiB file)")  # fmt: skip
    return f


def declared_bytes(f):
    """The bytes every dataset of an open HDF5 file says it holds, read from the shapes, not the data."""
    sizes = []
    f.visititems(lambda _, item: sizes.append(item.size * item.dtype.itemsize) if isinstance(item, h5py.Dataset)
                 else None)  # fmt: skip
    return sum(sizes)


def h5_layer_name(name):
    """Keras 3 forbids '/' in layer names; Keras 2 files use it (fire2/squeeze1x1)."""
    return name.replace("/", "_")


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


def _keras2_group(f):
    """The group holding a Keras 2 file's layers (whole-model files nest it under model_weights), or None."""
    group = f["model_weights"] if "model_weights" in f else f
    return group if "layer_names" in group.attrs else None


# === Backend files (Keras 2 layout) ===


def read_keras2_weights(path):
    """Keras 2 HDF5 weights -> ({layer name: [arrays]}, attributes).

    A group normally holds one layer's weights (named like "conv1_3/kernel:0"); a nested model
    (keras-yolo2 saved its backend as one) holds all of its layers', told apart by the weight-name
    prefixes ("conv_1/kernel:0", "norm_1/gamma:0"). Names with '/' (SqueezeNet's fire2/squeeze1x1)
    become '_' as Keras 3 requires.
    """
    with open_h5(path) as f:
        group = _keras2_group(f)
        if group is None:
            raise WeightsError(f"{path}: not a Keras 2 style weights file (no layer_names). {DETECTOR_VS_BACKEND}")
        attrs = {"not_pretrained": [_text(n) for n in f.attrs.get("not_pretrained", [])]}
        layers = {}
        for name in map(_text, group.attrs["layer_names"]):
            g = group[name]
            names = [_text(n) for n in g.attrs.get("weight_names", [])]
            if len({n.rsplit("/", 1)[0] for n in names}) == 1:  # one layer (its weight names may carry suffixes)
                layers[h5_layer_name(name)] = [np.asarray(g[n]) for n in names]
            else:  # a nested model: one layer per weight-name prefix
                for n in names:
                    layers.setdefault(h5_layer_name(n.rsplit("/", 1)[0]), []).append(np.asarray(g[n]))
    return layers, attrs


def load_backend_weights(model, path, normalization=None):
    """Loads a Keras 2 style HDF5 weights file by layer name into `model`; every layer of `model` that
    has weights must be in the file with the same shapes.

    A model built for gray input takes an RGB file's first layer through gray_first_layer, given the
    backend's RGB `normalization` (scale, offset, bgr).

    Returns the names of layers the file marks as not pretrained (a converted darknet prefix such as
    darknet19_448.conv.23 covers only the first layers).
    """
    layers = {h5_layer_name(layer.name): layer for layer in layers_with_weights(model)}
    file_layers, attrs = read_keras2_weights(path)
    if "DetectionLayer" in file_layers:
        raise WeightsError(f"{path} is a whole detector's weights, not a backend file. {DETECTOR_VS_BACKEND}")
    _pair_auto_named(layers, file_layers)
    missing = sorted(set(layers) - set(file_layers))
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise WeightsError(
            f"{path}: does not hold weights for {len(missing)} layer(s) of the {model.name} "
            f"model ({shown}). Is it the backend file for this backend?"
        )
    assign_by_name(layers, file_layers, path, normalization)
    return attrs["not_pretrained"]


def _pair_auto_named(layers, file_layers):
    """Layers Keras names itself (ConvNeXt's last `layer_normalization`) get another suffix each time a
    model is built in a process; unmatched layers on both sides are paired in order, as Keras itself
    loads HDF5 weights, and assign_by_name still checks every shape."""
    ours = [name for name in layers if name not in file_layers]
    theirs = [name for name in file_layers if name not in layers]
    if ours and len(ours) == len(theirs):
        for mine, name in zip(ours, theirs):
            file_layers[mine] = file_layers.pop(name)


def save_backend_weights(model, path, not_pretrained=()):
    """Writes `model`'s weights in the Keras 2 HDF5 layout that load_backend_weights reads;
    `not_pretrained` names layers left as initialised (they keep training when the backend is frozen)."""
    with atomic_write(path) as tmp, h5py.File(tmp, "w") as f:
        layers = layers_with_weights(model)
        f.attrs["layer_names"] = [layer.name.encode() for layer in layers]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["not_pretrained"] = [name.encode() for name in not_pretrained]
        for layer in layers:
            g = f.create_group(layer.name)
            names = [f"{layer.name}/{w.name}:0".encode() for w in layer.weights]
            g.attrs["weight_names"] = names
            for name, value in zip(names, layer.get_weights()):
                g.create_dataset(name.decode(), data=value)


def load_pretrained_backend(backend, model, backend_weights):
    """The pretrained weights model.backend_weights names, put into a freshly built backend `model`:
    "" = the backend's own file (weights/<name>_backend.h5) when it exists, "none" = none, else that file.
    A backend whose build already took weights (Keras' ImageNet download) needs no file.

    -> (where the weights came from, or None; names of layers the file left as initialised).
    """
    if backend.weights_built_in:
        return backend.weights_built_in, []
    if backend_weights.lower() == FROM_SCRATCH:
        return None, []
    path = backend_weights or backend.default_weights_path()
    if not os.path.exists(path):
        if backend_weights:  # a file the config names is missing: refused, rather than training on random weights
            raise WeightsError(f"model.backend_weights: {path} not found (\"\" uses weights/{backend.weights_file} "
                               'when present; "none" trains from scratch; python main.py weights lists downloads)')  # fmt: skip
        # the backend's own file is absent, as in the demo: expected, said once
        print(f"Note: {backend.name}: no backend weights at {path}; the backend is randomly initialised.")
        return None, []
    return path, load_backend_weights(model, path, backend.normalization())


# === Detector files ===


def detector_metadata(yolo):
    """What a saved detector records about itself, so it is never loaded into a different one."""
    return {"backend": yolo.backend.name, "backend_options": yolo.backend.resolved_options(),
            "input_size": [yolo.input_h, yolo.input_w], "input_channels": yolo.input_channels,
            "head_layers": yolo.head_layers, "head_filters": yolo.head_filters, "labels": yolo.labels,
            "anchors": yolo.anchors}  # fmt: skip


def save_detector(yolo, path):
    """The whole detector's weights (.weights.h5), with its description as a JSON attribute."""
    with atomic_write(path) as tmp:
        yolo.model.save_weights(tmp)
        with h5py.File(tmp, "a") as f:
            f.attrs[METADATA_KEY] = json.dumps(detector_metadata(yolo))


def read_metadata(path):
    """The detector description save_detector stored, or None (keras-yolo2 files, older files)."""
    with open_h5(path, "detector weights file") as f:
        value = f.attrs.get(METADATA_KEY)
    return json.loads(value) if value is not None else None


def head_layers_of(path):
    """The head_layers a detector file was saved with: its description's, 0 for keras-yolo2's files (one 1x1
    conv), None when the file does not say (a missing file too: loading it reports that)."""
    if not os.path.isfile(path):
        return None
    with open_h5(path, "detector weights file") as f:
        if _keras2_group(f) is not None:
            return 0
    saved = read_metadata(path)
    return saved.get("head_layers", 0) if saved else None


def load_detector(yolo, path):
    """Loads a whole detector's weights (backend + head) into `yolo`: this project's .weights.h5 files
    (their description checked first), converted darknet detectors, and keras-yolo2's checkpoints."""
    with open_h5(path, "detector weights file") as f:
        keras2 = _keras2_group(f) is not None
    if keras2:
        _load_keras2_detector(yolo, path)
        return
    check_metadata(read_metadata(path), yolo, path)
    try:
        yolo.model.load_weights(path)
    except (ValueError, KeyError) as e:
        raise WeightsError(
            f"{path} does not fit this detector ({yolo.backend.name} backend, input {yolo.input_w}x{yolo.input_h}, "
            f"{yolo.nb_class} labels, {yolo.nb_box} anchors): was it trained with another config? Keras said: "
            f"{str(e).splitlines()[0]}"
        ) from None


def check_metadata(saved, yolo, path):
    """Refuses a file saved from a different detector, naming each difference. Backend options are
    compared as they resolve (Tiny Yolo's final_filters 1024 is its default), so a file that spelled
    out a default still fits."""
    if not saved:
        return  # files written before detectors recorded this
    differences = []
    try:
        saved_options = get_backend(saved["backend"], **saved["backend_options"]).resolved_options()
    except (UserError, TypeError):
        saved_options = saved["backend_options"]
    ours = yolo.backend.resolved_options()
    if saved["backend"].lower() != yolo.backend.name.lower() or saved_options != ours:
        differences.append(f"backend {saved['backend']} {saved_options} (this one: {yolo.backend.name} {ours})")
    if saved.get("input_channels", 3) != yolo.input_channels:
        differences.append(f"{saved.get('input_channels', 3)} input channels (this one: {yolo.input_channels})")
    head = (saved.get("head_layers", 0), saved.get("head_filters", 256))
    if head[0] != yolo.head_layers or (head[0] and head[1] != yolo.head_filters):
        differences.append(f"head_layers {head[0]}, head_filters {head[1]} (this one: {yolo.head_layers}, "
                           f"{yolo.head_filters})")  # fmt: skip
    if saved["labels"] != yolo.labels:
        differences.append(f"labels {saved['labels']} (this one: {yolo.labels})")
    if len(saved["anchors"]) != len(yolo.anchors):
        differences.append(f"{len(saved['anchors']) // 2} anchors (this one: {yolo.nb_box})")
    if differences:
        raise WeightsError(
            f"{path} was trained as a different detector: " + "; ".join(differences) + ". Use the config it "
            "was trained with (runs/NAME/config.json beside its weights), or load only its backend."
        )
    if saved["anchors"] != yolo.anchors:
        warnings.warn(f"{path} was trained with anchors {saved['anchors']}, this detector has {yolo.anchors}: "
                      "its boxes will be sized for the old ones.", stacklevel=4)  # fmt: skip


def _load_keras2_detector(yolo, path):
    """keras-yolo2 saved whole models in Keras 2's HDF5 layout: the backend as one nested model,
    then the head named DetectionLayer."""
    file_layers, _ = read_keras2_weights(path)
    if yolo.head_layers:
        raise WeightsError(f"{path}: keras-yolo2 detectors have a single 1x1 conv head; set model.head_layers to 0")
    if "DetectionLayer" not in file_layers:
        raise WeightsError(f"{path} is a backend file (no detection head), not a detector. {DETECTOR_VS_BACKEND}")
    layers = {h5_layer_name(layer.name): layer for layer in layers_with_weights(yolo.backend_model)}
    missing = sorted(set(layers) - set(file_layers))
    if missing:
        raise WeightsError(
            f"{path} does not hold the {yolo.backend.name} backend's layers ({', '.join(missing[:4])} ...): "
            "was it trained with another backend?"
        )
    head = yolo.model.get_layer("DetectionLayer")
    found, expected = file_layers["DetectionLayer"][0].shape[-1], head.kernel.shape[-1]
    if found != expected:
        raise WeightsError(
            f"{path}: its head has {found} outputs, this detector {expected} = {yolo.nb_box} anchors x "
            f"(5 + {yolo.nb_class} labels). Use the labels and anchors it was trained with, or load only "
            "its backend (model.backend_weights) and train a new head."
        )
    layers["DetectionLayer"] = head
    assign_by_name(layers, file_layers, path, yolo.backend.normalization())
    if getattr(yolo.backend, "passthrough", None) == "darknet":
        warnings.warn(
            f"{path} is a keras-yolo2 file: its Full Yolo passthrough was TensorFlow's space_to_depth. Set "
            'model.backend_options to {"passthrough": "space_to_depth"} to use it as it was trained.',
            stacklevel=4,
        )


# === Head files ===


def save_head(yolo, path):
    """Only the head (one group per layer, YOLO.head()), with the detector's description."""
    with atomic_write(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs[METADATA_KEY] = json.dumps(detector_metadata(yolo))
        for layer in yolo.head():
            group = f.create_group(layer.name)
            for i, value in enumerate(layer.get_weights()):
                group.create_dataset(str(i), data=value)


def read_head(path):
    """-> (the detector description, {layer name: [arrays]}) of a head file."""
    with open_h5(path, "head file") as f:
        if METADATA_KEY not in f.attrs or "DetectionLayer" not in f:
            raise WeightsError(f"{path} is not a head file written by YOLO.save_head")
        meta = json.loads(f.attrs[METADATA_KEY])
        arrays = {name: [np.asarray(group[str(i)]) for i in range(len(group))] for name, group in f.items()}
    return meta, arrays


def set_head(yolo, arrays, path):
    """Puts a head file's arrays into `yolo`'s head layers, checking every shape."""
    for layer in yolo.head():
        expected = [tuple(w.shape) for w in layer.weights]
        found = [a.shape for a in arrays.get(layer.name, [])]
        if found != expected:
            raise WeightsError(f"{path}: {layer.name} has shapes {found}, the {yolo.backend.name} backend needs "
                               f"{expected}")  # fmt: skip
        layer.set_weights(arrays[layer.name])
