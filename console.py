"""What the terminal shows. TensorFlow and XLA print native start-up lines (oneDNN, CUDA probing, absl's
"before InitializeLog") straight to file descriptor 2, before any Python logging setting can reach them. The
command line moves that descriptor to a log file and gives Python's own stderr (warnings, errors, progress bars)
a copy of the terminal, so only native messages leave the screen. YOLO_NATIVE_LOGS=1 keeps them on it.
"""

import io
import os
import sys
import tempfile
import warnings


def quiet_native_logs():
    """-> the log file native messages now go to, or None when YOLO_NATIVE_LOGS=1 keeps them on stderr."""
    if os.environ.get("YOLO_NATIVE_LOGS") == "1":
        return None
    path = os.path.join(tempfile.gettempdir(), "yolov2-native.log")  # the latest run's
    try:
        sys.stderr.flush()
        terminal = os.dup(2)
        log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except (OSError, AttributeError, ValueError):  # no descriptor 2 or no writable temp folder: leave stderr be
        return None
    os.dup2(log, 2)
    os.close(log)
    sys.stderr = io.TextIOWrapper(io.FileIO(terminal, "w"), line_buffering=True, write_through=True,
                                  encoding=sys.stderr.encoding, errors="backslashreplace")  # fmt: skip
    return path


def one_line_warnings():
    """Warnings as "Warning: message" lines: a user needs what went wrong, not the line of this project (or of a
    library) that noticed it."""
    warnings.formatwarning = lambda message, category, *_, **__: f"Warning: {message}\n"
