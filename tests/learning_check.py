"""The suite's learning check: does the training recipe turn a backbone into a detector for images it never saw?

Training MobileNet-0.25 from scratch to a real mAP takes the demo's 30,000-50,000 images (minutes on 2 cores;
`scripts/readme_figures.py demo` measures the whole demo). Here the backbone starts from one that has learned the
demo's shapes (tests/data/shapes_mobilenet_backend.h5, written by scripts/shapes_backbone.py from a demo run) and the
demo's config trains it, unfrozen, with a new head on 200 images it was never shown, 8 epochs; the mAP on 60 more
such images is the figure. The head starts random, so the first epoch's mAP is near zero and what the recipe learns
in the other seven is what the test asserts.

    python tests/learning_check.py [SEED ...]   # the check for each seed (default 0-4): mAP after epoch 1 and 8
"""

import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, HERE]
from conftest import SHAPES_BACKBONE  # noqa: E402

EPOCHS = 8


def learn(folder, seed=0):
    """Trains in `folder` -> (validation mAP@0.5 after the first epoch, after the last, seconds)."""
    import main as cli
    from demo_data import write_split
    from runs import read_history

    data = os.path.join(folder, "shapes")
    # images the backbone never saw: the demo writes its own from seeds 2024 and 2025
    write_split(os.path.join(data, "train"), 200, seed=11 + 100 * seed, size=(128, 128))
    write_split(os.path.join(data, "valid"), 60, seed=12 + 100 * seed, size=(128, 128))
    with open(os.path.join(ROOT, "configs", "demo.json")) as f:
        config = json.load(f)
    config["model"].update(backend_weights=SHAPES_BACKBONE)
    config["train"].update(
        demo_dataset="",
        train_image_folder=os.path.join(data, "train", "images"),
        train_annot_folder=os.path.join(data, "train", "annotations"),
        nb_epochs=EPOCHS,
        learning_rate=0.005,  # the demo's 0.02 is for a backbone that starts from random weights
        burn_in=10,
        warmup_images=0,  # the anchor-prior term is for the first 12,800 images; these epochs see 1,600
        seed=seed,
        runs_dir=os.path.join(folder, "runs"),
        run_name="learn",
        prediction_images=1,
    )
    config["valid"].update(
        valid_image_folder=os.path.join(data, "valid", "images"),
        valid_annot_folder=os.path.join(data, "valid", "annotations"),
        map_every=1,
    )
    path = os.path.join(folder, "learn.json")
    with open(path, "w") as f:
        json.dump(config, f)
    start = time.perf_counter()
    cli.main(["--config", path, "--verbose", "0"])
    seconds = time.perf_counter() - start
    history = read_history(os.path.join(folder, "runs", "learn", "history.csv"))
    return float(history[0]["val_map50"]), float(history[-1]["val_map50"]), seconds


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for seed in [int(s) for s in sys.argv[1:]] or range(5):
        with tempfile.TemporaryDirectory() as folder:
            first, last, seconds = learn(folder, seed)
        print(f"seed {seed}: mAP@0.5 {first:.4f} after epoch 1, {last:.4f} after epoch {EPOCHS} ({seconds:.0f} s)")
