"""Writes the learning check's backbone (tests/data/shapes_mobilenet_backend.h5) from a demo run:

    python main.py --config configs/demo.json        # the demo: MobileNet-0.25 trained on generated shapes
    python scripts/shapes_backbone.py runs/demo      # its best checkpoint's backbone -> tests/data

The file holds only the backbone (as any file in weights/), so tests/learning_check.py trains a new head on it.
Run this again when the MobileNet backend's layers change.
"""

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
OUT = os.path.join(ROOT, "tests", "data", "shapes_mobilenet_backend.h5")


def main(run_dir):
    from config import build_config
    from frontend import YOLO
    from weight_files import save_backend_weights

    with open(os.path.join(run_dir, "config.json")) as f:
        config = build_config(json.load(f))
    with open(os.path.join(run_dir, "results.json")) as f:
        achieved = json.load(f)["map"]
    yolo = YOLO.from_config(config, load_pretrained=False)
    yolo.load_weights(os.path.join(run_dir, "best.weights.h5"))
    save_backend_weights(yolo.backend_model, OUT)
    print(f"{OUT}: the backbone of {run_dir} (mAP@0.5 {achieved:.4f} on its validation set)")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
