"""YOLOv2 trainer.

python main.py --epochs 50 --batch_size 32          # train with config.json
python main.py --config configs/demo.json           # the embedded demo (a few minutes on a CPU)
python main.py --resume [runs/NAME]                 # continue an interrupted run
"""

import argparse
import json
import os
import shutil
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_args(argv):
    p = argparse.ArgumentParser(description="Train a YOLOv2 detector (settings in a keras-yolo2 style config.json).")
    p.add_argument("command", nargs="?", default="train", choices=["train"], help="what to do (default: train)")
    p.add_argument("-c", "--config", default="config.json", help="config file (default: config.json)")
    p.add_argument("--epochs", type=int, help="number of epochs (train.nb_epochs)")
    p.add_argument("--batch_size", type=int, help="images per batch (train.batch_size)")
    p.add_argument("--learning_rate", type=float, help="peak learning rate (train.learning_rate)")
    p.add_argument("--input_size", type=int, help="network input side, a multiple of 32 (model.input_size)")
    p.add_argument("--backend", help="backend name, e.g. 'Full Yolo', 'Tiny Yolo', SqueezeNet, MobileNet")
    p.add_argument("--optimizer", choices=["adam", "sgd"], help="adam (default) or darknet's sgd")
    p.add_argument("--workers", type=int, help="data loading threads")
    p.add_argument("--name", help="run name: results go to runs/<name>")
    p.add_argument("--pretrained_weights", help="full detector weights to start from")
    freeze = p.add_mutually_exclusive_group()
    freeze.add_argument(
        "--unfreeze", dest="freeze_backend", action="store_false", default=None, help="train the backend too"
    )
    freeze.add_argument("--freeze", dest="freeze_backend", action="store_true", help="keep the backend frozen")
    p.add_argument("--resume", nargs="?", const="latest", help="resume a run folder (default: the latest run)")
    p.add_argument(
        "--verbose",
        type=int,
        default=1 if sys.stdout.isatty() else 2,
        choices=[0, 1, 2],
        help="Keras progress: 1 bar (default in a terminal), 2 a line per epoch (default otherwise), 0 none",
    )
    return p.parse_args(argv)


def fail(message, code=2):
    print(f"\nError: {message}", file=sys.stderr)
    sys.exit(code)


def resolve_config(args):
    from config import apply_overrides, load_config
    from training import latest_run_dir

    if args.resume:
        run_dir = args.resume
        if run_dir == "latest":
            runs_dir = load_config(args.config)["train"]["runs_dir"] if os.path.exists(args.config) else "runs"
            run_dir = latest_run_dir(runs_dir)
            if run_dir is None:
                fail(f"--resume: no interrupted run (a folder with resume.h5) under {runs_dir}/")
        if not os.path.exists(os.path.join(run_dir, "resume.h5")):
            fail(f"--resume: {run_dir} has no resume.h5 (it finished no epoch, or is not a run folder)")
        config = load_config(os.path.join(run_dir, "config.json"))
        if args.epochs:  # the one setting a resumed run may change: train longer
            config["train"]["nb_epochs"] = args.epochs
        return config, run_dir
    return apply_overrides(load_config(args.config), args), None


def build_detector(config, warmup_images=12800):
    from frontend import YOLO

    model_cfg, train_cfg = config["model"], config["train"]
    return YOLO(
        backend=model_cfg["backend"],
        input_size=model_cfg["input_size"],
        labels=model_cfg["labels"],
        max_box_per_image=model_cfg["max_box_per_image"],
        anchors=model_cfg["anchors"],
        freeze_backend=model_cfg["freeze_backend"],
        backend_weights=model_cfg["backend_weights"] or None,
        backend_options=model_cfg["backend_options"],
        loss_options={
            "object_scale": train_cfg["object_scale"],
            "no_object_scale": train_cfg["no_object_scale"],
            "coord_scale": train_cfg["coord_scale"],
            "class_scale": train_cfg["class_scale"],
            "ignore_thresh": train_cfg["ignore_thresh"],
            "warmup_images": warmup_images,
        },
    )


def generator_config(config, yolo):
    train_cfg = config["train"]
    return {
        "labels": yolo.labels,
        "batch_size": train_cfg["batch_size"],
        "input_hw": (yolo.input_h, yolo.input_w),
        "grid_hw": (yolo.grid_h, yolo.grid_w),
        "anchors": yolo.anchors,
        "max_box_per_image": yolo.max_box_per_image,
        "augmentation": {k: train_cfg[k] for k in ("jitter", "hue", "saturation", "exposure", "flip")},
    }


def train(args):
    import keras

    from datasets import DatasetNotFound, load_datasets
    from evaluate import evaluate, format_table
    from preprocessing import BatchGenerator
    from training import (
        RunCheckpoint,
        load_resume_state,
        make_optimizer,
        new_run_dir,
        plot_training_curves,
        seen_images_schedule,
        write_prediction_images,
    )

    config, run_dir = resolve_config(args)
    model_cfg, train_cfg, valid_cfg = config["model"], config["train"], config["valid"]
    try:
        train_set, valid_set, reports = load_datasets(config)
    except DatasetNotFound as e:
        fail(str(e))
    for split, report in reports.items():
        if report.files:
            print(f"[{split}] {report.summary()}")
    crowded = sum(len(i["object"]) > model_cfg["max_box_per_image"] for i in train_set)
    if crowded:
        print(f"Note: {crowded} training images have more than max_box_per_image={model_cfg['max_box_per_image']} "
              "objects; the no-object test sees only the first ones.")  # fmt: skip
    print(f"Training on {len(train_set)} images, validating on {len(valid_set)}.")

    keras.utils.set_random_seed(int(train_cfg["seed"]))  # same config, same initial weights
    yolo = build_detector(config, seen_images_schedule(train_cfg, len(train_set)))
    pretrained = train_cfg["pretrained_weights"]
    if pretrained and not os.path.exists(pretrained):
        fail(f"pretrained_weights not found: {pretrained}")
    if model_cfg["freeze_backend"] and yolo.backend_weights is None and not pretrained:
        expected = model_cfg["backend_weights"] or yolo.backend.default_weights_path()
        fail(
            f"The {yolo.backend.name} backend is frozen but its weights file is missing: {expected}\n"
            "A frozen random backend cannot learn. Either\n"
            f"  - put the pretrained backend weights at {expected} (or set model.backend_weights), or\n"
            "  - train from scratch with the backend unfrozen: --unfreeze (model.freeze_backend: false)."
        )
    if pretrained:
        yolo.load_weights(pretrained)
        print(f"Loaded pretrained detector weights from {pretrained}")
    n_trainable = sum(int(keras.ops.size(v)) for v in yolo.model.trainable_variables)
    n_total = sum(int(keras.ops.size(v)) for v in yolo.model.weights)
    print(f"{yolo.backend.name} backend {'frozen' if model_cfg['freeze_backend'] else 'trainable'}: "
          f"{n_trainable:,} of {n_total:,} parameters train; grid {yolo.grid_h}x{yolo.grid_w}, {yolo.nb_box} anchors.")  # fmt: skip

    gen_cfg = generator_config(config, yolo)
    workers = max(1, int(train_cfg["workers"]))
    train_gen = BatchGenerator(
        train_set, gen_cfg, True, True, train_cfg["train_times"], train_cfg["seed"], workers=workers
    )
    valid_gen = BatchGenerator(valid_set, gen_cfg, False, False, valid_cfg["valid_times"], workers=workers)
    epochs = int(train_cfg["nb_epochs"])
    yolo.model.compile(optimizer=make_optimizer(train_cfg, epochs * len(train_gen)))

    initial_epoch, best = 0, float("inf")
    if run_dir:
        initial_epoch, best = load_resume_state(os.path.join(run_dir, "resume.h5"), yolo.model)
        train_gen.set_epoch(initial_epoch)
        print(f"Resuming {run_dir} at epoch {initial_epoch + 1}/{epochs}.")
    else:
        name = train_cfg["run_name"] or model_cfg["backend"].lower().replace(" ", "_")
        run_dir = new_run_dir(train_cfg["runs_dir"], name)
        with open(os.path.join(run_dir, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
    print(f"Run folder: {run_dir}")

    callbacks = [
        RunCheckpoint(run_dir, best=best),
        keras.callbacks.CSVLogger(os.path.join(run_dir, "history.csv"), append=initial_epoch > 0),
        keras.callbacks.TensorBoard(os.path.join(run_dir, "logs")),
    ]
    if train_cfg["early_stopping_patience"]:
        callbacks.append(
            keras.callbacks.EarlyStopping(patience=int(train_cfg["early_stopping_patience"]), min_delta=1e-3)
        )
    if initial_epoch < epochs:
        try:
            yolo.model.fit(train_gen, validation_data=valid_gen, epochs=epochs, initial_epoch=initial_epoch,
                           callbacks=callbacks, verbose=args.verbose)  # fmt: skip
        except KeyboardInterrupt:
            fail(f"Interrupted. Completed epochs are saved; continue with:\n  python main.py --resume {run_dir}", 130)

    best_path = os.path.join(run_dir, "best.weights.h5")
    if os.path.exists(best_path):
        yolo.load_weights(best_path)
    print("\nEvaluating the best checkpoint on the validation set (VOC all-point AP, IoU 0.5):")
    results = evaluate(yolo, valid_set, score_thresh=valid_cfg["score_threshold"])
    print(format_table(results))
    with open(os.path.join(run_dir, "results.json"), "w") as f:
        summary = {k: {"ap": v["ap"], "n_gt": v["n_gt"]} for k, v in results["classes"].items()}
        json.dump({"map50": results["map"], "classes": summary}, f, indent=2)
    curves = plot_training_curves(os.path.join(run_dir, "history.csv"), os.path.join(run_dir, "training_curves.png"))
    images = write_prediction_images(
        yolo, valid_set, os.path.join(run_dir, "predictions"), train_cfg["prediction_images"]
    )
    saved = train_cfg["saved_weights_name"]
    if saved and os.path.exists(best_path):
        if not saved.endswith(".weights.h5"):
            saved = os.path.splitext(saved)[0] + ".weights.h5"
            print(f"Note: Keras 3 weight files end in .weights.h5; saved_weights_name is written as {saved}")
        shutil.copyfile(best_path, saved)
    print(f"\nmAP@0.5 = {results['map']:.4f}")
    print(
        f"Weights: {best_path}\nCurves: {curves}\nPredictions: {len(images)} images in {os.path.dirname(images[0]) if images else '-'}"
    )
    return results


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from config import ConfigError

    try:
        return train(args)
    except ConfigError as e:
        fail(str(e))


if __name__ == "__main__":
    main()
