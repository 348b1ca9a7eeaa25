"""What the terminal shows. TensorFlow and XLA print native start-up lines (oneDNN, CUDA probing, absl's
"before InitializeLog") straight to file descriptor 2, before any Python logging setting can reach them. The
command line moves that descriptor to a log file and gives Python's own stderr (warnings, errors, progress bars)
a copy of the terminal, so only native messages leave the screen. YOLO_NATIVE_LOGS=1 keeps them on it.
"""

import gc
import io
import os
import signal
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


_interrupted = []


def catch_interrupts():
    """Ctrl-C (and SIGTERM) raise KeyboardInterrupt and are remembered. One that lands while a garbage-collection
    callback (JAX registers one) or a finaliser runs would be swallowed by Python, with a traceback printed
    ("Exception ignored in _xla_gc_callback"), and training would go on; then it is only remembered: training asks
    `interrupted()` before it starts and after every batch, and stops there."""

    def handler(signum, frame):
        _interrupted.append(signum)
        if not _in_swallowing_frame(frame):
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _in_swallowing_frame(frame):
    callbacks = {getattr(callback, "__code__", None) for callback in gc.callbacks}
    while frame is not None:
        if frame.f_code in callbacks or frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def interrupted():
    return bool(_interrupted)


def exit_interrupted():
    """Exit with 130 without finalising the interpreter. After a Ctrl-C, TensorFlow's own threads (tf.data, the
    runtime's pools) still run, and so may a half-done import; tearing Python's modules down under them crashed the
    process (SIGSEGV instead of 130, seen in CI for a Ctrl-C 4 s into a run). What a run saved is already on disk:
    checkpoints are written to a temporary name and renamed."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)
