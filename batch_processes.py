"""Loader processes: training batches built by worker processes straight into shared memory.

Loader threads share one interpreter, and the Python between OpenCV's calls (drawing an image's augmentation, its
boxes, its targets: about 40% of a cached image's time here, bench's "one loader" line) holds the GIL: threads
cannot pass about 1 / that time however many cores the machine has. Processes have no GIL between them. Each one gets the BatchMaker's settings once, opens
the image cache's memory map itself, and writes the batch numbers it is given into a slot of one shared buffer; the
main process copies a finished batch out, frees its slot and hands the batch to fit. A batch is a function of its
number alone (batch_maker.py), so it is the same whichever process makes it, and the same as loader threads make it.

Workers are started with "spawn" (forking a process that runs TensorFlow's or JAX's threads is unsafe) and import
only batch_maker and what it imports, no deep-learning framework. They leave Ctrl-C to the main process and stop by
themselves within a second when it is gone.
"""

import multiprocessing
import os
import queue
import signal
import threading
import traceback
import warnings
import weakref
from multiprocessing import shared_memory

import numpy as np

from batch_maker import batch_arrays

POLL_S = 1.0  # how often a waiting worker looks for its parent, and the main process for dead workers
SHARED_MEMORY = "/dev/shm"  # where Linux keeps it; a Docker container has 64 MiB there unless run with --shm-size


class LoaderProcessError(RuntimeError):
    """A loader process failed (its traceback is in the message) or died."""


def slots_that_fit(maker, processes):
    """How many batches the shared buffer holds: 2 per process, fewer where the shared memory is small (at least
    one per process and one more), None where not even that fits -> (slots, MiB needed at least, MiB free)."""
    slot = sum(maker.buffer_sizes().values())
    wanted, least = 2 * processes, processes + 1
    try:
        stat = os.statvfs(SHARED_MEMORY)
    except OSError:  # not Linux: the system places it, and says no at creation if it cannot
        return wanted, least * slot / 2**20, None
    free = stat.f_bavail * stat.f_frsize
    fits = int(0.9 * free // slot)  # some room left for everything else that uses it
    return (min(wanted, fits) if fits >= least else None), least * slot / 2**20, free / 2**20


class BatchProcesses:
    """get(n) -> the batch maker.make_batch(n) returns, made by one of `processes` worker processes; the next
    `slots` - 1 batches are made ahead while it is used."""

    def __init__(self, maker, processes, slots):
        self.sizes = maker.buffer_sizes()
        self.slot_bytes = sum(self.sizes.values())
        self.slots = slots
        self.filenames = [instance["filename"] for instance in maker.instances]
        context = multiprocessing.get_context("spawn")
        self.memory = shared_memory.SharedMemory(create=True, size=self.slots * self.slot_bytes)
        self.tasks, self.results = context.Queue(), context.Queue()
        plain = maker.plain()
        self.workers = [
            context.Process(target=work, args=(plain, self.memory.name, self.sizes, self.slots, self.tasks,
                                               self.results, os.getpid()), daemon=True, name=f"batches-{i}")
            for i in range(processes)
        ]  # fmt: skip
        for worker in self.workers:
            worker.start()
        self.free = list(range(self.slots))
        self.pending = {}  # batch -> slot: given to a worker, not back yet
        self.done = {}  # batch -> (slot, shapes, seen): back, not asked for yet
        self.stale = set()  # slots of pending batches nobody will ask for (set_epoch moved on)
        self.failed = {}  # batch -> the traceback of its failure, raised when it is asked for
        self.bad_images = set()
        self.stopped = None  # why a worker died, once one has: fit may pass it on wrapped in a backend's error
        self.lock = threading.Lock()
        self.buffers = np.ndarray((self.slots, self.slot_bytes), np.uint8, self.memory.buf)
        self._finalizer = weakref.finalize(self, stop_workers, self.workers, self.tasks, self.memory)

    def get(self, batch):
        with self.lock:
            self._check_workers()
            window = range(batch, batch + self.slots)
            self._forget_outside(window)
            while batch not in self.done and batch not in self.failed:
                self._submit(window)
                self._receive()
            if batch in self.failed:
                raise LoaderProcessError(f"a loader process failed on batch {batch}:\n{self.failed.pop(batch)}")
            slot, shapes, seen = self.done.pop(batch)
            views = batch_arrays(shapes, split(self.buffers[slot], self.sizes))
            arrays = {name: view.copy() for name, view in views.items()}  # fit may hold a batch past its slot's reuse
            self.free.append(slot)
            self._submit(range(batch + 1, batch + 1 + self.slots))  # the next ones, while this one trains
        x = {"input_image": arrays["input_image"], "true_boxes": arrays["true_boxes"]}
        return x, {"grid": arrays["grid"], "seen": seen}

    def close(self):
        self.buffers = None  # the shared memory closes once nothing points into it
        self._finalizer()

    def _check_workers(self):
        """A worker that died took its batch with it: stop with what to do."""
        for worker in self.workers:
            code = worker.exitcode
            if code is None:
                continue
            hint = (f"it was killed by signal {-code} (out of memory? fewer train.workers need less)" if code < 0
                    else "each loader process imports the script that started training: if yours has no "
                         '`if __name__ == "__main__":` guard, add one')  # fmt: skip
            self.stopped = (f'loader process {worker.name} stopped (exit code {code}): {hint}; or set train.loader '
                            'to "threads"')  # fmt: skip
            raise LoaderProcessError(self.stopped)

    def _forget_outside(self, window):
        for batch in [b for b in self.done if b not in window]:
            self.free.append(self.done.pop(batch)[0])
        for batch in [b for b in self.pending if b not in window]:
            self.stale.add(self.pending.pop(batch))
        self.failed = {batch: text for batch, text in self.failed.items() if batch in window}

    def _submit(self, window):
        for batch in window:
            if not self.free:
                return
            if batch not in self.pending and batch not in self.done and batch not in self.failed:
                self.pending[batch] = slot = self.free.pop()
                self.tasks.put((batch, slot))

    def _receive(self):
        while True:
            try:
                message = self.results.get(timeout=POLL_S)
                break
            except queue.Empty:
                self._check_workers()
        if message[0] == "error":
            _, batch, slot, text = message
            self.free.append(slot)
            if self.pending.get(batch) == slot:
                del self.pending[batch]
                self.failed[batch] = text
            else:
                self.stale.discard(slot)
            return
        _, batch, slot, shapes, seen, bad = message
        for index in sorted(set(bad) - self.bad_images):
            warnings.warn(f"Unreadable image skipped: {self.filenames[index]}", stacklevel=3)
        self.bad_images |= set(bad)
        if slot in self.stale:
            self.stale.discard(slot)
            self.free.append(slot)
        else:
            del self.pending[batch]
            self.done[batch] = (slot, shapes, seen)


def stop_workers(workers, tasks, memory):
    """Asks every worker to stop, waits a little, ends those that did not, and frees the shared memory."""
    for _ in workers:
        tasks.put(None)
    for worker in workers:
        worker.join(timeout=2)
        if worker.is_alive():  # e.g. waiting on the task queue's lock, which a killed worker held
            worker.terminate()
            worker.join(timeout=2)
    memory.unlink()  # the name goes now, the pages with the last mapping
    try:
        memory.close()
    except BufferError:  # collected with its BatchProcesses: the buffer view goes with it
        pass


def work(maker, memory_name, sizes, slots, tasks, results, parent):
    """A worker process: make the batches asked for into their slots until told to stop or the parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's (it stops us by exiting)
    warnings.simplefilter("ignore")  # the main process says which images were skipped, once
    memory = shared_memory.SharedMemory(name=memory_name)
    buffers = np.ndarray((slots, sum(sizes.values())), np.uint8, memory.buf)
    try:
        while True:
            try:
                task = tasks.get(timeout=POLL_S)
            except queue.Empty:
                if os.getppid() != parent:
                    return
                continue
            if task is None:
                return
            batch, slot = task
            try:
                x, y = maker.make_batch(batch, out=split(buffers[slot], sizes))
            except Exception:
                results.put(("error", batch, slot, traceback.format_exc()))
                continue
            shapes = {"input_image": x["input_image"].shape, "true_boxes": x["true_boxes"].shape,
                      "grid": y["grid"].shape}  # fmt: skip
            results.put(("batch", batch, slot, shapes, y["seen"], sorted(maker.bad_images)))
            del x, y
    finally:
        del buffers
        memory.close()


def split(buffer, sizes):
    """One slot's bytes -> name -> its part of the bytes, in the order of `sizes`."""
    parts, offset = {}, 0
    for name, size in sizes.items():
        parts[name] = buffer[offset : offset + size]
        offset += size
    return parts
