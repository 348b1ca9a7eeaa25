"""The fit: one model.fit per training stage (frozen backend, then unfrozen with unfreeze_after), continued from
the run's resume file, stopped cleanly by Ctrl-C or SIGTERM (console.catch_interrupts), and restarted once at a
lower learning rate from the last good epoch when the loss stops being finite.
"""

import math
import os

import keras
import numpy as np
from keras import ops

from config import compile_args, optimizer_args
from console import interrupted
from errors import UserError
from evaluate import MapEvaluation
from optimizer import make_optimizer
from runs import EpochLog, NonFiniteLoss, RunCheckpoint, load_resume_state, resume_file
from tf_data import fit_data

NAN_RETRY_FACTOR = 0.1  # the learning rate after a non-finite loss, once


class TrainingError(UserError):
    """A problem the user must fix (or an interruption), reported without a traceback."""


class TrainingInterrupted(TrainingError):
    exit_code = 130


class FiniteGuard(keras.callbacks.Callback):
    """Stops the fit at the first batch whose loss is NaN or infinite, and at an epoch's end whose weights are,
    before the mAP, the CSV log or a checkpoint can see them (it comes first among the callbacks); and after a
    batch once a Ctrl-C or SIGTERM came, however it was caught."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if interrupted():  # a Ctrl-C Python swallowed inside a garbage-collection callback
            raise KeyboardInterrupt
        loss = float((logs or {}).get("loss", 0.0))
        if not math.isfinite(loss):
            raise NonFiniteLoss(f"the loss became {loss}", f"epoch {self.epoch + 1}, batch {batch + 1}")

    def on_epoch_end(self, epoch, logs=None):
        if not all(np.all(np.isfinite(ops.convert_to_numpy(v))) for v in self.model.weights):
            raise NonFiniteLoss("a weight became NaN or infinite", f"the end of epoch {epoch + 1}")


def training_stages(config):
    """[(first epoch, end epoch, backend frozen, learning-rate factor)]: one stage, or, with
    unfreeze_after, YAD2K's retraining: the head on a frozen backend, then everything at a lower rate."""
    train_cfg, freeze_backend = config["train"], config["model"]["freeze_backend"]
    epochs, after = train_cfg["nb_epochs"], train_cfg["unfreeze_after"]
    if not freeze_backend or not after or after >= epochs:
        return [(0, epochs, freeze_backend, 1.0)]
    return [(0, after, True, 1.0), (after, epochs, False, train_cfg["unfreeze_learning_rate_factor"])]


def fit_stages(yolo, config, train_gen, valid_gen, valid_set, run_dir, cache, verbose, callbacks=(), placement=None):
    """Every stage not yet done by the run's resume file; `callbacks` are added to each fit; `placement`
    (distribution.Placement) says how the batches are fed on several machines."""
    resume_path, initial_epoch, first_batch, best = resume_file(run_dir)
    retried = False
    for first, last, frozen, lr_factor in training_stages(config):
        if initial_epoch >= last:
            continue
        if not frozen and yolo.freeze_backend:
            norms = yolo.unfreeze_backend()
            trainable = yolo.parameter_count(trainable_only=True)
            print(f"Epoch {first + 1}: backend unfrozen, learning rate x{lr_factor:g}; {trainable:,} parameters train"
                  + (f" ({norms} BatchNorm layers keep their pretrained statistics)." if norms else "."))  # fmt: skip
        start = [ops.convert_to_numpy(v) for v in yolo.model.weights]  # the fallback before a first checkpoint
        while initial_epoch < last:
            factor = lr_factor * (NAN_RETRY_FACTOR if retried else 1.0)
            yolo.model.compile(optimizer=make_optimizer((last - first) * len(train_gen), **optimizer_args(config),
                                                        lr_factor=factor, first_stage=first == 0),
                               **compile_args(config))  # fmt: skip
            if resume_path and (initial_epoch > 0 or first_batch):  # a stage's first epoch starts a new optimizer
                load_resume_state(resume_path, yolo.model, optimizer=initial_epoch > first or first_batch > 0)
            else:
                for variable, value in zip(yolo.model.weights, start):
                    variable.assign(value)
            try:
                if first_batch:  # the rest of the epoch a step checkpoint cut: its unseen batches, in order
                    fit(yolo, config, train_gen, valid_gen, valid_set, run_dir, cache, verbose, callbacks, best,
                        initial_epoch, initial_epoch + 1, last, first_batch, placement)  # fmt: skip
                    initial_epoch, first_batch, best = resume_file(run_dir)[1:]
                fit(yolo, config, train_gen, valid_gen, valid_set, run_dir, cache, verbose, callbacks, best,
                    initial_epoch, last, last, placement=placement)  # fmt: skip
            except OSError as e:  # a full disk or a folder gone read-only: what was saved before stays whole
                raise TrainingError(f"cannot write to {run_dir} ({e.strerror or e}); training stopped. The last "
                                    f"complete checkpoint is kept: free space, then python main.py --resume "
                                    f"{run_dir}") from None  # fmt: skip
            except KeyboardInterrupt:
                raise TrainingInterrupted(
                    f"Interrupted. Completed epochs are saved; continue with:\n  python main.py --resume {run_dir}"
                ) from None
            except NonFiniteLoss as e:
                if retried:
                    raise TrainingError(f"{e.what} again ({e.where}) after lowering the learning rate "
                                        f"x{NAN_RETRY_FACTOR:g}; lower train.learning_rate or check the data (boxes, "
                                        f"scales); the last good weights are in {run_dir}") from None  # fmt: skip
                retried = True
                resume_path, initial_epoch, first_batch, best = resume_file(run_dir)
                print(f"\nWarning: {e.what} at {e.where}. Restarting from epoch "
                      f"{max(initial_epoch, first) + 1} with its last good weights at learning rate "
                      f"x{NAN_RETRY_FACTOR:g}.")  # fmt: skip
                continue
            except Exception:  # the backend may wrap a loader's error: say the loader's own
                if train_gen.stopped_loader() is None:
                    raise
                raise TrainingError(f"{train_gen.stopped_loader()}. Completed epochs are saved; continue with: python "
                                    f"main.py --resume {run_dir}") from None  # fmt: skip
            resume_path, initial_epoch, first_batch, best = resume_file(run_dir)
            initial_epoch = max(initial_epoch, last)  # early stopping ends the stage


def fit(yolo, config, train_gen, valid_gen, valid_set, run_dir, cache, verbose, callbacks, best, initial_epoch,
        end_epoch, stage_end, first_batch=0, placement=None):  # fmt: skip
    """One model.fit from `initial_epoch` (its batch `first_batch` on) to `end_epoch`."""
    data = fit_data(train_gen, initial_epoch, placement)
    train_gen.first_batch += first_batch
    stage_callbacks = make_callbacks(config, yolo, valid_set, run_dir, best, initial_epoch, cache, stage_end,
                                     first_batch, len(train_gen))  # fmt: skip
    # BatchGenerator shuffles the images itself (seeded); its batches come in order, epoch after epoch
    yolo.model.fit(data, steps_per_epoch=len(train_gen) - first_batch, validation_data=fit_data(valid_gen, 0, placement),
                   epochs=end_epoch, initial_epoch=initial_epoch, callbacks=stage_callbacks + list(callbacks),
                   verbose=verbose, shuffle=False)  # fmt: skip


def make_callbacks(config, yolo, valid_set, run_dir, best, initial_epoch, cache, stage_end, first_batch, epoch_steps):
    """The guard first; mAP evaluation before the checkpoint, CSV log and TensorBoard, which read the value it
    adds to the logs; the CSV log before the checkpoint, so resume.h5 never names an epoch history.csv lacks."""
    callbacks = [FiniteGuard()]
    steps = {"every_steps": config["train"]["checkpoint_every"], "first_batch": first_batch, "epoch_steps": epoch_steps}
    if config["valid"]["map_every"]:
        callbacks.append(MapEvaluation(yolo, valid_set, config, cache, last_epoch=stage_end))
        checkpoint = RunCheckpoint(yolo, run_dir, "val_map50", "max", best, **steps)
    else:
        checkpoint = RunCheckpoint(yolo, run_dir, "val_loss", "min", best, **steps)
    callbacks += [
        EpochLog(os.path.join(run_dir, "history.csv"), resume_epoch=initial_epoch),
        checkpoint,
        keras.callbacks.TensorBoard(os.path.join(run_dir, "logs")),
    ]
    patience = config["train"]["early_stopping_patience"]
    if patience:
        callbacks.append(keras.callbacks.EarlyStopping(patience=patience, min_delta=1e-3))
    return callbacks
