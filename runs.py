"""A run's folder: its name (never reused), the resume state written atomically each epoch with the last and best
checkpoints, and the training-curves image drawn from its CSV log."""

import csv
import glob
import json
import math
import os

import h5py
import keras
from keras import ops

from errors import UserError
from weight_files import atomic_write, open_h5, save_detector


class RunError(UserError):
    pass


class NonFiniteLoss(Exception):
    """The loss (or, at an epoch's end, a weight) stopped being finite: stages.fit_stages restarts or gives up."""

    def __init__(self, what, where):
        super().__init__(f"{what} at {where}")
        self.what, self.where = what, where


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


RESUME, PREVIOUS_RESUME = "resume.h5", "resume.prev.h5"


def save_resume_state(run_dir, model, epoch, best, batch=0):
    """Model and optimizer variables plus the epochs done (and the batches done of the next), in one file written
    atomically; the file it replaces stays as resume.prev.h5, the fallback when a resume.h5 is found damaged."""
    path = os.path.join(run_dir, RESUME)
    with atomic_write(path, keep_previous=os.path.join(run_dir, PREVIOUS_RESUME)) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["epoch"] = epoch
        f.attrs["batch"] = batch
        f.attrs["best"] = best
        for group, variables in (("model", model.weights), ("optimizer", model.optimizer.variables)):
            g = f.create_group(group)
            for i, v in enumerate(variables):
                g.create_dataset(str(i), data=ops.convert_to_numpy(v))


def resume_file(run_dir):
    """-> (the resume file to continue from, epochs done, batches done of the next epoch, best monitored value),
    or (None, 0, 0, None) when the run saved nothing yet: resume.h5, or resume.prev.h5 (said so) when resume.h5 is
    missing or unreadable."""
    problem = None
    for name in (RESUME, PREVIOUS_RESUME):
        path = os.path.join(run_dir, name)
        if not os.path.exists(path):
            continue
        try:
            with open_h5(path, "resume file") as f:
                epoch, batch, best = int(f.attrs["epoch"]), int(f.attrs.get("batch", 0)), float(f.attrs["best"])
        except (UserError, KeyError, OSError) as e:
            problem = f"{path} is unreadable ({e})"
            continue
        if problem:
            print(f"Warning: {problem}; continuing from {path} (epoch {epoch}).")
        return path, epoch, batch, best
    if problem:
        raise RunError(f"{problem} and there is no readable {PREVIOUS_RESUME} beside it")
    return None, 0, 0, None


def load_resume_state(path, model, optimizer=True):
    """Restores the model (and optimizer) variables save_resume_state wrote."""
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    groups = [("model", model.weights)] + ([("optimizer", model.optimizer.variables)] if optimizer else [])
    with open_h5(path, "resume file") as f:
        for group, variables in groups:
            g = f[group]
            if len(g) != len(variables):
                raise RunError(f"{path} was written for a different model ({len(g)} vs {len(variables)} variables)")
            for i, v in enumerate(variables):
                v.assign(g[str(i)][()])


class RunCheckpoint(keras.callbacks.Callback):
    """Each epoch: last.weights.h5, best.weights.h5 (by `monitor`), and resume.h5, all atomic; with `every_steps`,
    resume.h5 also every that many batches (a long epoch then loses at most that many to a kill). A fit that
    resumes mid-epoch starts its first epoch at batch `first_batch`."""

    def __init__(self, yolo, run_dir, monitor, mode, best=None, every_steps=0, first_batch=0, epoch_steps=0):
        super().__init__()
        self.yolo = yolo
        self.run_dir = run_dir
        self.monitor = monitor
        self.sign = 1.0 if mode == "min" else -1.0
        self.best = math.inf * self.sign if best is None else best
        self.every_steps, self.offset, self.epoch_steps, self.epoch = every_steps, first_batch, epoch_steps, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        done = self.offset + batch + 1
        if self.every_steps and done % self.every_steps == 0 and done < self.epoch_steps:  # the epoch's end saves
            save_resume_state(self.run_dir, self.model, self.epoch, self.best, batch=done)

    def on_epoch_end(self, epoch, logs=None):
        self.offset = 0
        value = (logs or {}).get(self.monitor)
        save_detector(self.yolo, os.path.join(self.run_dir, "last.weights.h5"))
        if value is not None and not math.isnan(value) and self.sign * value < self.sign * self.best:
            self.best = float(value)
            save_detector(self.yolo, os.path.join(self.run_dir, "best.weights.h5"))
        save_resume_state(self.run_dir, self.model, epoch + 1, self.best)


def plot_training_curves(csv_path, png_path):
    """Loss curves (total and per term, train and validation) and validation mAP from the CSV log, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_history(csv_path)
    if not rows:
        return None
    epochs = [int(r["epoch"]) for r in rows]
    panels = [("loss", ["loss", "val_loss"]), ("coord_loss", ["coord_loss", "val_coord_loss"]),
              ("obj_loss", ["obj_loss", "val_obj_loss"]), ("noobj_loss", ["noobj_loss", "val_noobj_loss"]),
              ("class_loss", ["class_loss", "val_class_loss"])]  # fmt: skip
    if "val_map50" in rows[0]:
        panels.append(("validation mAP@0.5", ["val_map50"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.5))
    for ax, (title, keys) in zip(axes, panels):
        for key in keys:
            if key not in rows[0]:
                continue
            points = [(e, float(r[key])) for e, r in zip(epochs, rows) if r[key] not in ("", "NA", "nan")]
            style = "--o" if key == "val_map50" else "--" if key.startswith("val_") else "-"
            if points:
                ax.plot(*zip(*points), style, label=key, markersize=3)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path


class EpochLog(keras.callbacks.Callback):
    """history.csv: one row per finished epoch (counted from 1, as the progress bar counts), the whole file
    rewritten atomically each epoch, so a kill leaves the previous or the new version, never half a row. Columns
    are every key any epoch logged ("NA" where an epoch has none, as the mAP on epochs it is not computed).
    Resuming at `resume_epoch` drops the rows of later epochs: a kill after the row but before resume.h5 would
    otherwise log that epoch twice."""

    def __init__(self, path, resume_epoch=0):
        super().__init__()
        self.path = path
        self.rows = [r for r in read_history(path) if r["epoch"].isdigit() and int(r["epoch"]) <= resume_epoch]

    def on_epoch_end(self, epoch, logs=None):
        self.rows.append({"epoch": str(epoch + 1), **{k: repr(float(v)) for k, v in (logs or {}).items()}})
        keys = sorted({k for row in self.rows for k in row} - {"epoch"})
        with atomic_write(self.path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, ["epoch", *keys], restval="NA")
            writer.writeheader()
            writer.writerows(self.rows)


def read_history(csv_path):
    """history.csv's rows as dicts, or [] when it is missing or unreadable."""
    try:
        with open(csv_path, newline="") as f:
            return list(csv.DictReader(f))
    except (OSError, csv.Error, UnicodeDecodeError):
        return []


def best_epoch(csv_path):
    """The epoch the best checkpoint comes from, read from history.csv -> {"epoch" (from 1), "by" (val_map50 or
    val_loss), "value", "warning": why that best is suspect, or None} or None without a log."""
    rows = read_history(csv_path)
    by = "val_map50" if rows and "val_map50" in rows[0] else "val_loss"
    points = [(int(r["epoch"]), float(r[by])) for r in rows if r.get(by) not in (None, "", "NA", "nan")]
    if not points:
        return None
    epoch, value = (max if by == "val_map50" else min)(points, key=lambda p: p[1])
    warning = None
    if epoch == points[0][0] and len(points) > 1:
        what = "validation mAP@0.5 never rose above" if by == "val_map50" else "validation loss never fell below"
        warning = (f"the {what} its value at epoch {epoch} ({value:.4f}; last {points[-1][1]:.4f} at epoch "
                   f"{points[-1][0]}), so the saved best is the model of epoch {epoch}")  # fmt: skip
    return {"epoch": epoch, "by": by, "value": value, "warning": warning}


def record_best_epoch(results_path, best):
    """results.json (evaluate.write_evaluation's) gains best_epoch and best_by."""
    with open(results_path) as f:
        results = json.load(f)
    results.update(best_epoch=best["epoch"], best_by=best["by"])
    with atomic_write(results_path) as tmp, open(tmp, "w") as f:
        json.dump(results, f, indent=2)
