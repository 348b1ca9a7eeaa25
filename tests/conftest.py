"""Shared test setup and fixtures: paths, a small demo-like dataset and config, the CLI as a
subprocess, the loss and a batch generator with the config's defaults."""

import json
import os
import subprocess
import sys
import warnings

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# XLA's CPU backend without LLVM's optimization passes, for the suite's JAX processes and TensorFlow's jit_compile:
# the tests' programs are tiny and run a few steps, so compiling them is most of their time (JAX's tests: 142 s ->
# 118 s), and the numbers they compute do not change (a replica run's loss to the last digit)
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
SHAPES_JPG = os.path.join(ROOT, "tests", "data", "shapes.jpg")
SHAPES_BACKBONE = os.path.join(ROOT, "tests", "data", "shapes_mobilenet_backend.h5")  # scripts/shapes_backbone.py
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
# keras.applications backbones that take several seconds each to build on 2 cores: their build tests are slow
SLOW_TO_BUILD = {"DenseNet201", "InceptionV3", "NASNetMobile", "EfficientNetB0", "ResNet50", "Xception", "ConvNeXtTiny"}

warnings.filterwarnings("ignore", message=".*no backend weights.*")


def shared_path(*parts):
    """Path under ../shared, or None when it is absent (a user's fresh clone)."""
    path = os.path.join(SHARED, *parts)
    return path if os.path.exists(path) else None


def _demo_like_config(folder, train_count=8, valid_count=4, **train):
    """A tiny shapes dataset in `folder` and a MobileNet-0.25 config training on it -> (path, dict)."""
    from demo_data import write_split

    data = folder / "shapes"
    if not data.exists():
        write_split(str(data / "train"), train_count, seed=1, size=(128, 128))
        write_split(str(data / "valid"), valid_count, seed=2, size=(128, 128))
    config = {
        "model": {
            "backend": "MobileNet",
            "backend_options": {"alpha": 0.25},
            "input_size": 96,
            "anchors": [1.0, 1.0, 2.0, 2.0],
            "max_box_per_image": 6,
            "labels": ["ellipse", "rectangle", "triangle"],
            "freeze_backend": False,
            "head_layers": 0,
        },
        "train": {
            "train_image_folder": str(data / "train" / "images"),
            "train_annot_folder": str(data / "train" / "annotations"),
            "batch_size": 4,
            "nb_epochs": 1,
            "burn_in": 2,
            "workers": 1,
            "runs_dir": str(folder / "runs"),
            "run_name": "t",
            "prediction_images": 2,
            # tracing and compiling the train step is most of a tiny run's time (a 2-epoch run: 63 s traced (no XLA),
            # 32 s eager, same mAP); bench and the demo test run the traced step
            "jit_compile": False,
            "run_eagerly": True,
            **train,
        },
        "valid": {
            "valid_image_folder": str(data / "valid" / "images"),
            "valid_annot_folder": str(data / "valid" / "annotations"),
        },
    }
    path = folder / "config.json"
    path.write_text(json.dumps(config))
    return str(path), config


def pytest_collection_modifyitems(items):
    """The slow tests first, so that the two xdist workers finish together: the many short tests fill in at the end
    instead of one worker running a long test alone. The order is stable otherwise; xdist keeps it (pyproject's
    --no-loadscope-reorder)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session", autouse=True)
def jax_compilation_cache(tmp_path_factory):
    """One JAX compilation cache on disk for every JAX process the session starts (both xdist workers'). A JAX
    process compiles its jitted steps and every op run outside them (variable initializers, metrics) with XLA: a
    replica run took 28 s here, 16 s once another process had written the cache."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "jax-cache"
    cache = {
        "JAX_COMPILATION_CACHE_DIR": str(folder),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",  # cache every op, however quick to compile
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
    }
    os.environ.update(cache)  # run_under_jax and forked children copy os.environ
    ENV.update(cache)  # the subprocess environment other modules imported


@pytest.fixture(scope="session")
def demo_like_config():
    """demo_like_config(folder, train_count=8, valid_count=4, **train_keys) -> (config path, config dict)."""
    return _demo_like_config


@pytest.fixture(scope="session")
def run_cli():
    """run_cli(["predict", ...]) runs main.py in a fresh process -> CompletedProcess (text output)."""

    def run(args, **kwargs):
        return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, env=ENV, capture_output=True, text=True,
                              timeout=600, **kwargs)  # fmt: skip

    return run


@pytest.fixture(scope="session")
def default_config():
    from config import build_config

    return build_config({})


@pytest.fixture(scope="session")
def make_loss(default_config):
    """make_loss(anchors, **overrides): the YOLO loss with the config's defaults (darknet's yolov2-voc.cfg values)."""
    from config import loss_args
    from loss import YoloLoss

    return lambda anchors, **overrides: YoloLoss(anchors, **{**loss_args(default_config), **overrides})


@pytest.fixture(scope="session")
def plain_batches(default_config):
    """plain_batches(instances, yolo, batch_size, times=1): training batches (shuffled, `seen` counting up
    so the warm-up term is on) without augmentation."""
    from batches import BatchGenerator
    from config import generator_args
    from preprocessing import TargetLayout

    def make(instances, yolo, batch_size, times=1):
        args = {**generator_args(default_config, "train"), "batch_size": batch_size, "times": times, "workers": 1,
                "augmentation": None}  # fmt: skip
        return BatchGenerator(instances, TargetLayout.of(yolo), **args)

    return make


@pytest.fixture(scope="session")
def overfit_detector(tmp_path_factory):
    """MobileNet-0.25 at 128 px, from the learning check's backbone (it has seen shapes), overfit on 8 shapes images
    (no augmentation, 150 steps: 29 s here, 66 s for the 500 that a random backbone needed; every box found), trained
    once for the whole session: the overfitting check and the export tests read it -> (yolo, instances, folder),
    the folder holding best.weights.h5 and a config.json whose training and validation sets are those images."""
    import keras

    from batches import BatchGenerator
    from config import build_config, generator_args, optimizer_args
    from demo_data import DEMO_LABELS, write_split
    from frontend import YOLO
    from optimizer import make_optimizer
    from preprocessing import TargetLayout, parse_annotation

    folder = tmp_path_factory.mktemp("overfit")
    write_split(str(folder / "few"), 8, seed=7, size=(128, 128))
    images, annotations = str(folder / "few" / "images"), str(folder / "few" / "annotations")
    instances, _ = parse_annotation(annotations, images, DEMO_LABELS)
    keras.utils.set_random_seed(0)
    config = build_config({"model": {"backend": "MobileNet", "backend_options": {"alpha": 0.25}, "input_size": 128,
                                     "labels": DEMO_LABELS, "max_box_per_image": 6, "freeze_backend": False,
                                     "anchors": [0.6, 0.6, 0.87, 1.6, 1.6, 0.87, 1.33, 1.33],
                                     "backend_weights": SHAPES_BACKBONE}})  # fmt: skip
    yolo = YOLO.from_config(config)
    args = {**generator_args(config, "train"), "batch_size": 8, "times": 5, "workers": 1, "augmentation": None,
            "stream": False}  # fmt: skip
    data = BatchGenerator(instances, TargetLayout.of(yolo), **args)
    epochs = 30
    settings = {**optimizer_args(config), "learning_rate": 1e-2, "burn_in": 20, "lr_schedule": "cosine"}
    yolo.model.compile(optimizer=make_optimizer(epochs * len(data), **settings))
    yolo.model.fit(data, steps_per_epoch=len(data), epochs=epochs, verbose=0)
    yolo.save_weights(str(folder / "best.weights.h5"))
    config["train"].update(train_image_folder=images, train_annot_folder=annotations, runs_dir=str(folder / "runs"))
    config["valid"].update(valid_image_folder=images, valid_annot_folder=annotations)
    (folder / "config.json").write_text(json.dumps(config))
    return yolo, instances, folder


# tests/replica_run.py: a tiny training run on the devices given, in a fresh process (test_distribution.py,
# test_cluster.py)
REPLICA_RUN = os.path.join(ROOT, "tests", "replica_run.py")
TWO_JAX_CPUS = {
    "KERAS_BACKEND": "jax",
    "JAX_PLATFORMS": "cpu",
    "XLA_FLAGS": f"{ENV['XLA_FLAGS']} --xla_force_host_platform_device_count=2",
}


def replica_run(folder, devices, *options, env=()):
    """tests/replica_run.py in a fresh process -> its JSON: the start block's device row, the epoch's logged
    losses, every variable of last.weights.h5."""
    done = subprocess.run([sys.executable, REPLICA_RUN, str(folder), devices, "2", *options], cwd=ROOT,
                          env={**ENV, **dict(env)}, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def one_device_run(tmp_path_factory):
    """one_device_run(engine) -> tests/replica_run.py on cpu:0 under "tensorflow" or "jax", run once per session
    (per xdist worker: the tests that compare with it share the "replica_runs" group): the update that the
    multi-device (test_distribution.py) and several-machine (test_cluster.py) runs must make."""
    runs = {}

    def run(engine):
        if engine not in runs:
            env = TWO_JAX_CPUS if engine == "jax" else {}  # two JAX CPU devices, one of them used
            runs[engine] = replica_run(tmp_path_factory.mktemp(f"one_{engine}"), "cpu:0", env=env)
        return runs[engine]

    return run


def run_under_jax(script, *args):
    """Runs `script` in a fresh Python under KERAS_BACKEND=jax (the backend is fixed at import) -> the JSON
    object its last output line holds."""
    import json
    import subprocess

    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
    done = subprocess.run([sys.executable, "-c", script, *map(str, args)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
