"""Training: data -> detector -> fit -> evaluate, with run folders and checkpoints that survive interruption.

`run_training(config, run_dir)` is the whole job main.py runs; the helpers below it are its stages.
"""

import contextlib
import json
import os
import shutil
import tempfile
import time

import keras

from batches import BatchGenerator
from cluster import agree
from config import generator_args, loader_count, loss_args
from config_checks import as_hw
from console import interrupted
from data_check import summarize
from datasets import load_datasets
from distribution import place, synchronize_batchnorm
from evaluate import format_table, predict_instances, report_evaluation
from frontend import YOLO
from image_cache import open_cache
from images import decode_image, printable, write_image
from preprocessing import TargetLayout
from previews import write_batch_previews, write_validation_mosaics
from report import write_report
from run_summary import end_rows, format_block, start_rows
from runs import PREVIOUS_RESUME, RESUME, best_epoch, new_run_dir, plot_training_curves, record_best_epoch, resume_file
from stages import TrainingError, fit_stages
from utils import draw_boxes
from weight_files import FROM_SCRATCH, atomic_write


def run_training(config, run_dir=None, verbose=1, callbacks=()):
    """Trains as `config` says (continuing `run_dir` if given), then evaluates; returns the evaluation.

    `callbacks` are added to the Keras callbacks of every fit stage.
    """
    placement = place(config["train"]["devices"], config["train"]["batch_size"])
    with placement.scope():  # the model's variables live on the replicas; each batch is split among them
        return train_and_report(config, placement, run_dir, verbose, callbacks)


def train_and_report(config, placement, run_dir, verbose, callbacks):
    config = worker_caches(config, placement)
    train_cfg = config["train"]
    train_set, valid_set, reports = load_data(config)
    check_batch_size(config, len(train_set))
    keras.utils.set_random_seed(train_cfg["seed"])  # same config, same initial weights
    yolo = YOLO.from_config(config, n_train_images=len(train_set), weights=train_cfg["pretrained_weights"] or None)
    note_warmup(loss_args(config, len(train_set))["warmup_images"], train_cfg, len(train_set))
    check_weights(yolo, config)
    batchnorm = synchronize_batchnorm(yolo.model, placement, train_cfg["sync_batchnorm"])
    cache = image_cache(config, train_set + valid_set)
    train_set, valid_set = drop_unreadable(cache, train_set, valid_set)
    figures = data_figures(config, train_set, valid_set)
    train_gen, valid_gen = make_generators(config, yolo, train_set, valid_set, cache, placement.shard)
    with contextlib.closing(train_gen):  # its loader processes and their shared memory go with training
        if run_dir:
            announce_resume(run_dir, train_cfg["nb_epochs"], placement)
        placed = placement.describe(train_cfg["batch_size"], batchnorm)
        if not placement.is_chief:  # its checkpoints go to a private folder, removed at the end
            return train_as_worker(config, yolo, placement, placed, run_dir, (train_gen, valid_gen, valid_set, cache),
                                   callbacks)  # fmt: skip
        run_dir = run_dir or start_run_dir(config, yolo)
        check_free_space(run_dir, yolo)
        start_block = format_block("run", [*start_rows(config, yolo, figures, reports, len(train_gen), placed),
                                           ("run folder", run_dir)])  # fmt: skip
        print(start_block)
        if not os.path.exists(os.path.join(run_dir, "train_batch0.jpg")):  # the first batches with their targets drawn
            write_batch_previews(train_gen, yolo.labels, run_dir)
        if interrupted():  # a Ctrl-C during the preparation that Python swallowed
            raise KeyboardInterrupt
        fit_stages(yolo, config, train_gen, valid_gen, valid_set, run_dir, cache, verbose, callbacks, placement)
    return report(yolo, config, valid_set, run_dir, cache, start_block)


def worker_caches(config, placement):
    """The config with this worker's own cache folder when it is not the chief: on a shared disk, workers
    building the same cache files at once would clash on their temporaries."""
    if placement.is_chief:
        return config
    train = config["train"]
    shared = train["cache_dir"] or os.path.join(train["runs_dir"], "cache")
    return {**config, "train": {**train, "cache_dir": os.path.join(shared, f"worker{placement.worker.index}")}}


def announce_resume(run_dir, nb_epochs, placement):
    """Says where a resumed run continues; refuses a finished one, and workers that would start apart."""
    _, initial_epoch, first_batch, _ = resume_file(run_dir)
    if initial_epoch >= nb_epochs:
        raise TrainingError(f"{run_dir} has finished its {nb_epochs} epochs: --resume {run_dir} "
                            f"--epochs N (more than {nb_epochs}) trains it longer")  # fmt: skip
    agree(placement.worker, placement.engine_object, initial_epoch, "the epoch to resume at")
    agree(placement.worker, placement.engine_object, first_batch, "the batch to resume at")
    at = f"epoch {initial_epoch + 1}/{nb_epochs}" + (f", batch {first_batch + 1}" if first_batch else "")
    print(f"Resuming {run_dir} at {at}." if initial_epoch or first_batch else
          f"Resuming {run_dir}: it finished no epoch, so it starts again at epoch 1.")  # fmt: skip


def train_as_worker(config, yolo, placement, placed, run_dir, data, callbacks):
    """A worker other than the chief trains in step with it (the same model, its own rows of every batch, the
    same mAP figures, so early stopping and the learning-rate restarts agree), but writes nothing the user keeps:
    its checkpoints and logs go to a private folder (a copy of the resumed run's resume files and best
    checkpoint) removed at the end. -> None (the chief reports the evaluation)."""
    train_gen, valid_gen, valid_set, cache = data
    print(f"Worker {placement.worker.index} of {placement.workers}: {placed}")
    scratch = tempfile.mkdtemp(prefix=f"yolo-worker{placement.worker.index}-")
    try:
        for name in (RESUME, PREVIOUS_RESUME, "history.csv", "best.weights.h5"):
            if run_dir and os.path.exists(os.path.join(run_dir, name)):
                shutil.copyfile(os.path.join(run_dir, name), os.path.join(scratch, name))
        fit_stages(yolo, config, train_gen, valid_gen, valid_set, scratch, cache, 0, callbacks, placement)
        if os.path.exists(os.path.join(scratch, "best.weights.h5")):  # as the chief's report does: a collective
            yolo.load_weights(os.path.join(scratch, "best.weights.h5"))  # broadcast, which every worker joins
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"Worker {placement.worker.index} done; the chief (worker 0) writes the run folder and its evaluation.")
    return None


def note_warmup(warmup_images, train_cfg, n_train_images):
    shown = train_cfg["nb_epochs"] * train_cfg["train_times"] * n_train_images
    if warmup_images >= shown / 2:
        print(f"Note: the anchor-prior warm-up (train.warmup_images {warmup_images:,}, darknet's 12,800) covers "
              f"{min(warmup_images / shown, 1):.0%} of this run's {shown:,} training images shown; shorter "
              "warm-ups measured within the run-to-run spread on two small datasets (README: Your own data).")  # fmt: skip


def load_data(config):
    """-> training and validation instances and their parse reports; prints what was skipped."""
    train_set, valid_set, reports = load_datasets(config)
    for split, parse_report in reports.items():
        if parse_report.files and parse_report.summary().count("\n"):  # more than "N annotation files read"
            print(f"[{split}] {parse_report.summary()}")
    max_box = config["model"]["max_box_per_image"]
    crowded = sum(len(i["object"]) > max_box for i in train_set)
    if crowded:
        print(f"Note: {crowded} training images have more than max_box_per_image={max_box} objects; "
              "the no-object test sees only the first ones.")  # fmt: skip
    return train_set, valid_set, reports


def data_figures(config, train_set, valid_set):
    """data_check.summarize of each split, for the run's opening block."""
    model = config["model"]
    return {split: summarize(instances, model["labels"], as_hw(model["input_size"]), model["anchors"])
            for split, instances in (("train", train_set), ("valid", valid_set))}  # fmt: skip


def drop_unreadable(cache, train_set, valid_set):
    """Leaves out the images the cache could not decode (truncated or damaged files whose header reads), so the
    counts at the start are the images trained on; names them."""
    bad = cache.unreadable() if cache is not None else set()
    if not bad:
        return train_set, valid_set
    shown = ", ".join(printable(p) for p in sorted(bad)[:5]) + (", ..." if len(bad) > 5 else "")
    print(f"{len(bad)} image(s) do not decode (damaged or truncated) and are left out: {shown}")
    return [i for i in train_set if i["filename"] not in bad], [i for i in valid_set if i["filename"] not in bad]


def start_run_dir(config, yolo):
    """A new run folder with the config as built (the head it chose) in it; an unwritable runs_dir is one message."""
    train_cfg = config["train"]
    name = train_cfg["run_name"] or config["model"]["backend"].lower().replace(" ", "_")
    try:
        run_dir = new_run_dir(train_cfg["runs_dir"], name)
        with atomic_write(os.path.join(run_dir, "config.json")) as tmp, open(tmp, "w") as f:
            json.dump({**config, "model": {**config["model"], "head_layers": yolo.head_layers}}, f, indent=2)
    except OSError as e:
        raise TrainingError(f"train.runs_dir {train_cfg['runs_dir']}: cannot write a run folder there "
                            f"({e.strerror or e}); set runs_dir (or --name) to a writable place") from None  # fmt: skip
    return run_dir


def check_free_space(run_dir, yolo):
    """Refuses to start when the run folder's disk cannot hold one epoch's checkpoints (last, best, resume.h5
    with the optimizer's two moments, and the previous resume.h5), twice over."""
    needed = 2 * 6 * 4 * yolo.parameter_count()
    free = shutil.disk_usage(run_dir).free
    if free < needed:
        raise TrainingError(f"{run_dir}: {free / 2**20:.1f} MiB free, and one epoch's checkpoints need about "
                            f"{needed / 2**20:.1f} MiB: free space or set train.runs_dir elsewhere")  # fmt: skip


def check_batch_size(config, n_train_images):
    """Refuses a batch that cannot be meant, before allocating it: over 1000 times the training set (batches wrap
    around the set, so a batch larger than it is allowed), or one whose input arrays alone need over half this
    machine's memory."""
    batch = config["train"]["batch_size"]
    if batch > 1000 * n_train_images:
        raise TrainingError(f"train.batch_size {batch:,} is over 1000 times the {n_train_images:,} training images; "
                            "a batch of 16-64 is usual")  # fmt: skip
    side_h, side_w = as_hw(config["model"]["input_size"])
    if config["train"]["multi_scale"]:
        side_h = side_w = max(config["train"]["multi_scale_sizes"])
    needed = batch * side_h * side_w * config["model"]["input_channels"] * (1 + 4)  # uint8 images, float32 inputs
    memory = physical_memory()
    if memory and needed > memory / 2:
        raise TrainingError(f"train.batch_size {batch:,} needs {needed / 2**30:,.1f} GiB for one batch of "
                            f"{side_w}x{side_h} inputs; this machine has {memory / 2**30:.1f} GiB: lower it")  # fmt: skip


def physical_memory():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_weights(yolo, config):
    """Refuses a frozen backend without pretrained weights; loads `pretrained_weights`."""
    model_cfg, pretrained = config["model"], config["train"]["pretrained_weights"]
    if pretrained and not os.path.exists(pretrained):
        raise TrainingError(f"pretrained_weights not found: {pretrained}")
    if model_cfg["freeze_backend"] is True and yolo.backend_weights is None and not pretrained:
        expected = model_cfg["backend_weights"] or yolo.backend.default_weights_path()
        if expected.lower() == FROM_SCRATCH:
            raise TrainingError('model.backend_weights is "none" (train from scratch): set model.freeze_backend '
                                "to false (or --unfreeze); a frozen random backend cannot learn.")  # fmt: skip
        raise TrainingError(
            f"The {yolo.backend.name} backend is frozen but its weights file is missing: {expected}\n"
            "A frozen random backend cannot learn. Either\n"
            f"  - put the pretrained backend weights at {expected} (or set model.backend_weights), or\n"
            "  - train from scratch with the backend unfrozen: --unfreeze (model.freeze_backend: false)."
        )
    if pretrained:
        yolo.load_weights(pretrained)
        print(f"Loaded pretrained detector weights from {pretrained}")
    freeze = model_cfg["freeze_backend"]
    frozen_for_good = freeze is True and not config["train"]["unfreeze_after"]
    if frozen_for_good and not yolo.head_layers and not yolo.backend.ends_in_detection_layers:
        print('Note: a frozen ImageNet backbone under a single 1x1 conv learns little; model.head_layers "auto" or 2 '
              "adds trainable detection layers (see README, Your own data).")  # fmt: skip


def make_generators(config, yolo, train_set, valid_set, cache, shard=(0, 1)):
    layout = TargetLayout.of(yolo)
    train_gen = BatchGenerator(train_set, layout, **generator_args(config, "train"), cache=cache, shard=shard)
    valid_gen = BatchGenerator(valid_set, layout, **generator_args(config, "valid"), cache=cache, shard=shard)
    return train_gen, valid_gen


def image_cache(config, instances):
    """The decode-once cache of the run's images (train.cache_images), built on first use; None when off."""
    train_cfg = config["train"]
    if not train_cfg["cache_images"]:
        return None
    start = time.perf_counter()
    cache_dir = train_cfg["cache_dir"] or os.path.join(train_cfg["runs_dir"], "cache")
    try:
        cache = open_cache([i["filename"] for i in instances], cache_dir, loader_count(config))
    except OSError as e:  # a read-only or full cache_dir: decode every epoch instead
        print(f"Note: no image cache ({cache_dir}: {e.strerror or e}); images are decoded every epoch.")
        return None
    print(f"Image cache: {len(cache)} images, {cache.nbytes() / 2**20:.1f} MiB in {cache.folder} "
          f"({time.perf_counter() - start:.1f} s).")  # fmt: skip
    return cache


def report(yolo, config, valid_set, run_dir, cache=None, start_block=""):
    """Evaluates the best checkpoint; writes results.json, PR curves, training curves, prediction images and
    report.html (which repeats `start_block`, the run's opening summary)."""
    best_path = os.path.join(run_dir, "best.weights.h5")
    if os.path.exists(best_path):
        yolo.load_weights(best_path)
    print("\nEvaluating the best checkpoint on the validation set:")
    # One detection pass (low threshold, as darknet's valid) serves both the AP and the drawings.
    valid_set, detections = predict_instances(yolo, valid_set, config, cache=cache)
    score_threshold = config["valid"]["score_threshold"]
    results = report_evaluation(valid_set, detections, yolo.labels, run_dir, "voc", score_threshold)
    plot_training_curves(os.path.join(run_dir, "history.csv"), os.path.join(run_dir, "training_curves.png"))
    predictions = os.path.join(run_dir, "predictions")
    images = write_prediction_images(
        valid_set, detections, yolo.labels, predictions, config["train"]["prediction_images"], score_threshold
    )
    write_validation_mosaics(valid_set, detections, yolo.labels, run_dir, score_threshold)
    saved = config["train"]["saved_weights_name"]
    if saved and os.path.exists(best_path):
        if not saved.endswith(".weights.h5"):
            saved = os.path.splitext(saved)[0] + ".weights.h5"
            print(f"Note: Keras 3 weight files end in .weights.h5; saved_weights_name is written as {saved}")
        shutil.copyfile(best_path, saved)
    best = best_epoch(os.path.join(run_dir, "history.csv"))
    if best:
        record_best_epoch(os.path.join(run_dir, "results.json"), best)
    end_block = format_block("result", end_rows(run_dir, results, best, len(images)))
    write_report(run_dir, start_block, end_block, format_table(results))
    print("\n" + end_block)
    if best and best["warning"]:
        print(f"Warning: {best['warning']}. On a frozen pretrained backbone a 1x1 head (model.head_layers 0) "
              "can learn to call every cell empty; model.head_layers 2 learns there.")  # fmt: skip
    return results


def write_prediction_images(instances, detections, labels, out_dir, count, score_threshold):
    """Draws the detections scoring at least `score_threshold` on the first `count` images; returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for instance, (boxes, scores, cls) in zip(instances[:count], detections):
        image = decode_image(instance["filename"])
        if image is None:
            continue
        shown = scores >= score_threshold
        drawn = draw_boxes(image, boxes[shown], scores[shown], cls[shown], labels)
        path = os.path.join(out_dir, os.path.splitext(os.path.basename(instance["filename"]))[0] + ".jpg")
        write_image(path, drawn)
        paths.append(path)
    return paths
