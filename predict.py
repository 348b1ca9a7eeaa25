"""Prediction on an image, a folder of images, a video file or a webcam: boxes drawn with label and
score, and the detections as records of the evaluation's detections file (see evaluate.py).

`run_prediction` is what `main.py predict` runs.
"""

import json
import os
import sys

import cv2
from tqdm import tqdm

from detections import detect_files, detection_records
from errors import UserError
from images import IMAGE_EXTENSIONS, printable, write_image
from utils import draw_boxes
from weight_files import atomic_write

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


class PredictionError(UserError):
    """Bad prediction input, reported without a traceback."""


def input_kind(source):
    """-> "webcam" (a device index such as "0"), "folder", "image" or "video"."""
    if source.isdigit():
        return "webcam"
    if os.path.isdir(source):
        return "folder"
    if not os.path.exists(source):
        raise PredictionError(f"Input not found: {source}")
    ext = os.path.splitext(source)[1].lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in VIDEO_EXTENSIONS:
        return "video"
    raise PredictionError(
        f"{source}: not an image ({', '.join(IMAGE_EXTENSIONS)}) or a video ({', '.join(VIDEO_EXTENSIONS)})"
    )


def has_display():
    return sys.platform in ("win32", "darwin") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def run_prediction(yolo, source, out_dir, detection_args, json_path=None, max_frames=None, show=None):
    """Predicts on `source`, writes the drawn results into `out_dir` (and the records to `json_path`).
    detection_args: config.detection_args (thresholds and the cap on detections per image)."""
    kind = input_kind(source)
    os.makedirs(out_dir, exist_ok=True)
    if kind in ("image", "folder"):
        paths = [source] if kind == "image" else image_files(source)
        if not paths:
            raise PredictionError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) in {source}")
        records = predict_images(yolo, paths, out_dir, detection_args)
    else:
        capture = cv2.VideoCapture(int(source) if kind == "webcam" else source)
        if not capture.isOpened():
            what = f"webcam {source}" if kind == "webcam" else f"video {source}"
            raise PredictionError(f"Cannot open {what}" + (": is a camera connected?" if kind == "webcam" else ""))
        name = f"webcam{source}" if kind == "webcam" else os.path.basename(source)
        show = has_display() if show is None and kind == "webcam" else bool(show)
        try:
            records = predict_stream(yolo, capture, name, out_dir, detection_args, live=kind == "webcam", show=show,
                                     max_frames=max_frames)  # fmt: skip
        finally:
            capture.release()
    if json_path:
        with atomic_write(json_path) as tmp, open(tmp, "w") as f:
            json.dump(records, f, indent=1)
        print(f"Detections ({len(records)}): {json_path}")
    print(f"Output: {out_dir}")
    return records


def image_files(folder):
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))


def predict_images(yolo, paths, out_dir, detection_args):
    """Each image drawn into out_dir/<name>.jpg; unreadable files are skipped and reported."""
    records, unreadable = [], []
    for path, image, detection in detect_files(yolo, paths, detection_args, desc="predict", progress=len(paths) > 1):
        if image is None:
            unreadable.append(path)
            continue
        name = os.path.basename(path)
        write_image(
            os.path.join(out_dir, os.path.splitext(name)[0] + ".jpg"), draw_boxes(image, *detection, yolo.labels)
        )
        records += detection_records(name, detection, yolo.labels)
    skipped = ", ".join(map(printable, unreadable[:5]))
    if len(unreadable) == len(paths):  # an exit code of 0 with no output would read as "no objects found"
        raise PredictionError(f"Nothing predicted: none of the {len(paths)} image file(s) could be read ({skipped})")
    if unreadable:
        print(f"Skipped {len(unreadable)} unreadable image(s): {skipped}")
    print(f"{len(records)} detections in {len(paths) - len(unreadable)} image(s).")
    if not records:
        highest = max_score(yolo, paths[:32])
        print(f"No detection scores {detection_args['score_threshold']:g} or more" + (
            f"; the highest on the first {min(len(paths), 32)} images scores {highest:.4f}: try --score_threshold "
            f"{highest * 0.9:.3g}" if highest else ""))  # fmt: skip
    return records


def max_score(yolo, paths):
    """The best detection score on `paths` with no score threshold (0 when there is none)."""
    found = detect_files(yolo, paths, {"score_threshold": 0.0, "nms_threshold": 0.45, "max_detections": 1},
                         progress=False)  # fmt: skip
    return max((float(d[1].max()) for _, _, d in found if d is not None and len(d[1])), default=0.0)


def predict_stream(yolo, capture, name, out_dir, detection_args, live=False, show=False, max_frames=None):
    """Frames from an OpenCV capture. A video file becomes out_dir/<name>.mp4 with the boxes drawn; a
    live camera is shown in a window (q or Esc stops) or, without a display, written as numbered JPEGs.
    Records carry the frame number."""
    total = None if live else int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    if max_frames:
        total = min(total or max_frames, max_frames)
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    writer, frames_dir = None, os.path.join(out_dir, os.path.splitext(name)[0])
    if live and not show:
        os.makedirs(frames_dir, exist_ok=True)
        print(f"No display: writing frames to {frames_dir} (Ctrl-C stops)")
    records, frame_number = [], 0
    progress = tqdm(total=total, desc=name, unit="frame")
    try:
        while max_frames is None or frame_number < max_frames:
            ok, bgr = capture.read()
            if not ok:
                break
            image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            detection = yolo.detect([image], **detection_args)[0]
            drawn = cv2.cvtColor(draw_boxes(image, *detection, yolo.labels), cv2.COLOR_RGB2BGR)
            records += [{**r, "frame": frame_number} for r in detection_records(name, detection, yolo.labels)]
            if not live:
                if writer is None:
                    path = os.path.join(out_dir, os.path.splitext(name)[0] + ".mp4")
                    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, drawn.shape[1::-1])
                writer.write(drawn)
            elif show:
                cv2.imshow(f"YOLOv2: {name} (q to quit)", drawn)
                if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                    break
            else:
                write_image(os.path.join(frames_dir, f"frame_{frame_number:06d}.jpg"), drawn[..., ::-1])
            frame_number += 1
            progress.update()
    except KeyboardInterrupt:
        print("Stopped.")
    finally:
        progress.close()
        if writer is not None:
            writer.release()
        if show:
            cv2.destroyAllWindows()
    print(f"{len(records)} detections in {frame_number} frames.")
    return records
