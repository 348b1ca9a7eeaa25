"""The two blocks a training run prints: at the start what it is about to do (data, model, schedule, device), at
the end what came of it (best epoch, mAP, where each file is). report.html repeats both."""

import os
from collections import Counter

import keras

from batch_maker import MULTI_SCALE_EVERY, MULTI_SCALE_FINAL_BATCHES
from config import generator_args, learning_rate, loss_args
from data_check import short_summary

RULE_WIDTH = 78


def format_block(title, rows):
    """rows [(name, text)] under a titled rule, the names in one column."""
    width = max(len(name) for name, _ in rows)
    lines = [f"-- {title} ".ljust(RULE_WIDTH, "-")]
    for name, text in rows:
        lines.append(f"{name:<{width}}  " + str(text).replace("\n", "\n" + " " * (width + 2)))
    lines.append("-" * RULE_WIDTH)
    return "\n".join(lines)


def start_rows(config, yolo, figures, reports, steps_per_epoch, placement=""):
    """-> [(name, text)]: data, model, head, schedule, device, loaders. `figures` are data_check.summarize's per split;
    `placement` says how the batch is spread over the devices (distribution.Placement.describe)."""
    rows = [(split, short_summary(split, f).removeprefix(f"[{split}] ")) for split, f in figures.items()]
    skipped = sum(len(r.skipped_files) for r in reports.values())
    bad_lines = sum(len(r.bad_lines) for r in reports.values())
    listed = " (listed above)" if skipped or bad_lines else ""
    rows.append(("skipped", f"{skipped} annotation files, {bad_lines} label lines{listed}"))
    rows += [("model", model_text(yolo, config)), ("head", head_text(yolo)),
             ("schedule", schedule_text(config, steps_per_epoch, figures["train"]["images"])),
             ("device", device_text() + (f"; {placement}" if placement else "")),
             ("loaders", loaders_text(config))]  # fmt: skip
    return rows


def loaders_text(config):
    args = generator_args(config, "train")
    if args["workers"] < 2:
        return "training batches made between steps, in the training process (train.workers 1)"
    kind = "processes" if args["processes"] else "threads"
    return f"{args['workers']} {kind} make the training batches ahead (train.workers, train.loader)"


def model_text(yolo, config):
    freeze = config["model"]["freeze_backend"]
    state = "frozen" if freeze is True else "trainable" if not freeze else f"partly frozen ({freeze})"
    trainable, total = yolo.parameter_count(trainable_only=True), yolo.parameter_count()
    weights = yolo.backend_weights or "none, random initialisation"
    gray = ", gray input (1 channel)" if yolo.input_channels == 1 else ""
    return (f"{yolo.backend.name} backbone, {state} (weights: {weights}); {trainable:,} of {total:,} parameters "
            f"train; input {yolo.input_w}x{yolo.input_h}{gray}")  # fmt: skip


def head_text(yolo):
    layers = f"{yolo.head_layers} 3x3 conv-BN-leaky layer(s) of {yolo.head_filters} + " if yolo.head_layers else ""
    return (
        f"{layers}the 1x1 detection conv ({yolo.head_choice}); grid {yolo.grid_w}x{yolo.grid_h}, {yolo.nb_box} anchors"
    )


def schedule_text(config, steps_per_epoch, n_train_images):
    train = config["train"]
    epochs, total = train["nb_epochs"], train["nb_epochs"] * steps_per_epoch
    rate = learning_rate(config)
    auto = f" (auto: {'frozen' if config['model']['freeze_backend'] is True else 'trained'} backend)" if (
        train["learning_rate"] == "auto") else ""  # fmt: skip
    first_stage = train["unfreeze_after"] * steps_per_epoch if 0 < train["unfreeze_after"] < epochs else total
    burn_in = min(train["burn_in"], first_stage // 4)  # optimizer.make_optimizer's cap
    text = (f"{epochs} epochs x {steps_per_epoch} steps of {train['batch_size']} images; {train['optimizer']}, "
            f"learning rate {rate:g}{auto}, {train['lr_schedule']}, burn-in {burn_in} steps; anchor-prior warm-up "
            f"{loss_args(config, n_train_images)['warmup_images']:,} images")  # fmt: skip
    if 0 < train["unfreeze_after"] < epochs:
        text += (f"\nbackbone unfrozen after epoch {train['unfreeze_after']}, then learning rate "
                 f"x{train['unfreeze_learning_rate_factor']:g}")  # fmt: skip
    if train["multi_scale"]:
        smallest, largest = train["multi_scale_sizes"]
        text += (f"\nmulti-scale (darknet's random=1): a square side from {smallest} to {largest} every "
                 f"{MULTI_SCALE_EVERY} batches, the largest for the last {MULTI_SCALE_FINAL_BATCHES}; evaluation at "
                 f"model.input_size")  # fmt: skip
    return text


def device_text():
    """The accelerators the Keras backend computes on, or the CPU."""
    backend = keras.backend.backend()
    names = []
    if backend == "jax":
        import jax

        names = [d.device_kind for d in jax.devices() if d.platform != "cpu"]
    elif backend == "tensorflow":
        import tensorflow as tf

        names = [tf.config.experimental.get_device_details(d).get("device_name", "GPU")
                 for d in tf.config.list_physical_devices("GPU")]  # fmt: skip
    elif backend == "torch":
        import torch

        names = [torch.cuda.get_device_name(k) for k in range(torch.cuda.device_count())]
    if not names:
        return f"CPU, {os.cpu_count()} cores ({backend})"
    return ", ".join(f"{n} x {name}" for name, n in Counter(names).items()) + f" ({backend})"


def end_rows(run_dir, results, best, prediction_count):
    """-> [(name, text)]: the best epoch, the scores, and where each output is."""
    rows = []
    if best:
        rows.append(("best", f"epoch {best['epoch']}, by {best['by']} {best['value']:.4f}"))
    f1 = results["curves"]["best"]
    rows += [
        ("mAP@0.5", f"{results['map']:.4f} (VOC all-point); COCO mAP@[.5:.95] {results['coco']['map']:.4f}"),
        ("best F1", f"{f1['f1']:.3f} at score threshold {f1['threshold']:.2f} (predict's default for this run)"
         if f1["f1"] else "0: no score threshold finds an object"),
    ]  # fmt: skip
    files = [("weights", "best.weights.h5, last.weights.h5, resume.h5 (train on: --resume RUN --epochs N)"),
             ("results", "results.json, history.csv, config.json (as trained)"),
             ("curves", "training_curves.png, pr_curves/, f1_curve.png, p_curve.png, r_curve.png"),
             ("images", f"confusion_matrix.png, train_batch0-2.jpg, val_batch0_labels.jpg, val_batch0_pred.jpg, "
                        f"predictions/ ({prediction_count})"),
             ("report", "report.html (all of it on one page)")]  # fmt: skip
    rows.append(("run folder", run_dir))
    rows += [(name, text) for name, text in files]
    return rows
