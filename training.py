"""Fitting: optimizer and learning-rate schedule, run folders, checkpoints that survive interruption."""

import csv
import glob
import math
import os
import re

import h5py
import keras
from keras import ops


@keras.saving.register_keras_serializable(package="yolov2")
class BurnInSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """darknet's burn_in (lr * (step / burn_in)^4) followed by constant, cosine or step decay."""

    def __init__(self, learning_rate, total_steps, burn_in=1000, policy="cosine", final_fraction=0.01):
        self.learning_rate = learning_rate
        self.total_steps = max(int(total_steps), 1)
        self.burn_in = int(burn_in)
        self.policy = policy
        self.final_fraction = final_fraction

    def __call__(self, step):
        step = ops.cast(step, "float32")
        lr = ops.convert_to_tensor(self.learning_rate, "float32")
        progress = ops.clip(step / self.total_steps, 0.0, 1.0)
        if self.policy == "cosine":
            lr = lr * (self.final_fraction + (1 - self.final_fraction) * 0.5 * (1 + ops.cos(math.pi * progress)))
        elif self.policy == "steps":  # darknet's steps policy, x0.1 at 80% and 90% of training
            lr = lr * ops.where(progress >= 0.8, 0.1, 1.0) * ops.where(progress >= 0.9, 0.1, 1.0)
        if self.burn_in > 0:
            lr = lr * ops.minimum(ops.power((step + 1) / self.burn_in, 4.0), 1.0)
        return lr

    def get_config(self):
        return {
            "learning_rate": self.learning_rate,
            "total_steps": self.total_steps,
            "burn_in": self.burn_in,
            "policy": self.policy,
            "final_fraction": self.final_fraction,
        }


def make_optimizer(train_cfg, total_steps):
    schedule = BurnInSchedule(
        train_cfg["learning_rate"], total_steps, min(train_cfg["burn_in"], total_steps // 4), train_cfg["lr_schedule"]
    )
    if train_cfg["optimizer"] == "sgd":
        # darknet: momentum .9, decay .0005 (applied as lr * decay * w each step).
        return keras.optimizers.SGD(schedule, momentum=train_cfg["momentum"], weight_decay=train_cfg["weight_decay"])
    return keras.optimizers.Adam(schedule)


def new_run_dir(runs_dir, name):
    """runs/<name>, runs/<name>2, ... (never reuses a folder)."""
    os.makedirs(runs_dir, exist_ok=True)
    path, k = os.path.join(runs_dir, name), 2
    while os.path.exists(path):
        path, k = os.path.join(runs_dir, f"{name}{k}"), k + 1
    os.makedirs(path)
    return path


def latest_run_dir(runs_dir):
    candidates = [d for d in glob.glob(os.path.join(runs_dir, "*")) if os.path.exists(os.path.join(d, "resume.h5"))]
    return max(candidates, key=os.path.getmtime) if candidates else None


def save_weights_atomic(model, path):
    """Keras writes in place; a crash mid-write would destroy the previous file. Write aside, then rename."""
    tmp = re.sub(r"\.weights\.h5$", "", path) + ".tmp.weights.h5"
    model.save_weights(tmp)
    os.replace(tmp, path)


def save_resume_state(path, model, epoch, best):
    """Model and optimizer variables plus the epoch, in one file written atomically."""
    tmp = path + ".tmp"
    with h5py.File(tmp, "w") as f:
        f.attrs["epoch"] = epoch
        f.attrs["best"] = best
        for group, variables in (("model", model.weights), ("optimizer", model.optimizer.variables)):
            g = f.create_group(group)
            for i, v in enumerate(variables):
                g.create_dataset(str(i), data=ops.convert_to_numpy(v))
    os.replace(tmp, path)


def load_resume_state(path, model):
    """Restores what save_resume_state wrote -> (epoch to start from, best monitored value)."""
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    with h5py.File(path, "r") as f:
        for group, variables in (("model", model.weights), ("optimizer", model.optimizer.variables)):
            g = f[group]
            if len(g) != len(variables):
                raise ValueError(f"{path} was written for a different model ({len(g)} vs {len(variables)} variables)")
            for i, v in enumerate(variables):
                v.assign(g[str(i)][()])
        return int(f.attrs["epoch"]), float(f.attrs["best"])


class RunCheckpoint(keras.callbacks.Callback):
    """Each epoch: last.weights.h5, best.weights.h5 (by `monitor`), and resume.h5, all atomic."""

    def __init__(self, run_dir, monitor="val_loss", best=math.inf):
        super().__init__()
        self.run_dir = run_dir
        self.monitor = monitor
        self.best = best

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        save_weights_atomic(self.model, os.path.join(self.run_dir, "last.weights.h5"))
        if value is not None and value < self.best:
            self.best = float(value)
            save_weights_atomic(self.model, os.path.join(self.run_dir, "best.weights.h5"))
        save_resume_state(os.path.join(self.run_dir, "resume.h5"), self.model, epoch + 1, self.best)


def plot_training_curves(csv_path, png_path):
    """Loss curves (total and per term, train and validation) from the CSV log, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    epochs = [int(r["epoch"]) + 1 for r in rows]
    terms = ["loss", "coord_loss", "obj_loss", "noobj_loss", "class_loss"]
    fig, axes = plt.subplots(1, len(terms), figsize=(4 * len(terms), 3.5))
    for ax, term in zip(axes, terms):
        for prefix, style in (("", "-"), ("val_", "--")):
            key = prefix + term
            if key in rows[0]:
                ax.plot(epochs, [float(r[key]) for r in rows], style, label=key)
        ax.set_title(term)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path


def write_prediction_images(yolo, instances, out_dir, count=8, obj_thresh=0.3):
    """Draws the detector's boxes on the first `count` images; returns the paths written."""
    import cv2

    from evaluate import predict_instances
    from preprocessing import decode_image
    from utils import draw_boxes

    os.makedirs(out_dir, exist_ok=True)
    paths = []
    chosen = instances[:count]
    for instance, (boxes, scores, cls) in zip(
        chosen, predict_instances(yolo, chosen, obj_thresh=obj_thresh, progress=False)
    ):
        image = decode_image(instance["filename"])
        if image is None:
            continue
        drawn = draw_boxes(image, boxes, scores, cls, yolo.labels)
        path = os.path.join(out_dir, os.path.splitext(os.path.basename(instance["filename"]))[0] + ".jpg")
        cv2.imwrite(path, cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths


def seen_images_schedule(train_cfg, n_train_images):
    """Images over which the loss's anchor-prior warm-up runs; keras-yolo2's warmup_epochs maps onto it."""
    if train_cfg.get("warmup_epochs") is not None:
        return int(train_cfg["warmup_epochs"] * train_cfg["train_times"] * n_train_images)
    return int(train_cfg["warmup_images"])
