"""main.py runs as fresh processes forked from one that imported TensorFlow and Keras once.

The kill harness starts main.py more than twenty times; in a new interpreter each start spends about 5 s importing
TensorFlow before it does anything. A multiprocessing "forkserver" imports main and training (so Keras and
TensorFlow) once, runs no TensorFlow op, and forks every run from that state: each run is still its own process,
killed with a real SIGKILL, that leaves only what it wrote to disk. (Forking a process that has run TensorFlow ops
is unsafe, which is why the pytest process itself is never the parent.)
"""

import multiprocessing
import os
import sys

PRELOAD = ["main", "training"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(argv, stderr_path):
    """The child: main.py's command line as `python main.py ARGV` runs it, its stderr in a file, stdout dropped."""
    os.chdir(ROOT)  # as `python main.py` is run from the checkout
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    os.dup2(os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 2)
    import main

    try:
        main.main(argv)
    except SystemExit as stop:  # main.fail's exit code; multiprocessing would print a traceback for other codes
        sys.stderr.flush()
        os._exit(stop.code if isinstance(stop.code, int) else 1)
    sys.stderr.flush()
    os._exit(0)


class Runs:
    """start(argv, stderr_path) -> a started multiprocessing.Process running main.py with `argv`."""

    def __init__(self):
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(PRELOAD)

    def start(self, argv, stderr_path):
        process = self.context.Process(target=_main, args=(list(argv), str(stderr_path)), daemon=True)
        process.start()
        return process

    def run(self, argv, stderr_path):
        """Runs to the end -> (exit code, stderr text)."""
        process = self.start(argv, stderr_path)
        process.join()
        return process.exitcode, read(stderr_path)


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""
