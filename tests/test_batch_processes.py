"""Loader processes (batch_processes.py): the same batches as one process makes, in any order asked for; failures
and a too small shared memory said in one message; nothing left behind."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import ROOT

import batch_processes
import image_cache
from batches import BatchGenerator
from config import build_config, generator_args
from demo_data import write_split
from preprocessing import TargetLayout, parse_annotation

LABELS = ["ellipse", "rectangle", "triangle"]
LAYOUT = TargetLayout(LABELS, (64, 64), (2, 2), [1.0, 1.0, 2.0, 2.0], 6, 3)


def dataset(folder, count=7):
    write_split(str(folder), count, seed=5, size=(96, 128))
    instances, _ = parse_annotation(str(folder / "annotations"), str(folder / "images"), LABELS)
    return instances


def generators(instances, cache=None, **settings):
    """(made by 2 loader processes, made in this process) with the same settings: augmentation on."""
    args = {**generator_args(build_config({}), "train"), "batch_size": 3, "workers": 2, **settings}
    return (BatchGenerator(instances, LAYOUT, **{**args, "processes": True}, cache=cache),
            BatchGenerator(instances, LAYOUT, **{**args, "workers": 1}, cache=cache))  # fmt: skip


def assert_same_batch(a, b):
    for part_a, part_b in zip(a, b):
        assert part_a.keys() == part_b.keys()
        for name in part_a:
            assert part_a[name].dtype == part_b[name].dtype
            np.testing.assert_array_equal(part_a[name], part_b[name], err_msg=name)


def test_processes_make_the_batches_one_process_makes_in_any_order(tmp_path):
    instances = dataset(tmp_path / "data")
    cache = image_cache.open_cache([i["filename"] for i in instances], str(tmp_path / "cache"), progress=False)
    multi_scale = {"multi_scale": (64, 128), "epochs": 200}  # sizes change every 10 batches: buffers of the largest
    with_processes, inline = generators(instances, cache, **multi_scale)
    try:
        assert with_processes.process_loader() is not None
        for batch in [0, 1, 2, 3, 11, 12, 12, 5]:  # ahead, back (stale work is dropped), the same one twice
            assert_same_batch(with_processes[batch], inline[batch])
        with_processes.set_epoch(2), inline.set_epoch(2)  # a resumed run
        assert_same_batch(with_processes[1], inline[1])
        sides = {with_processes[b][0]["input_image"].shape[1] for b in range(0, 60, 10)}
        assert len(sides) > 1  # multi-scale did change the size
    finally:
        with_processes.close()


def test_a_shard_and_the_jpeg_path_match_too(tmp_path):
    instances = dataset(tmp_path / "data")
    with_processes, inline = generators(instances, shard=(1, 2), batch_size=4)
    try:
        for batch in range(4):
            x, _ = with_processes[batch]
            assert x["input_image"].shape[0] == 2  # worker 1's two rows of the global batch of 4
            assert_same_batch(with_processes[batch], inline[batch])
    finally:
        with_processes.close()


def test_an_unreadable_image_is_said_once_and_replaced_as_in_one_process(tmp_path):
    instances = dataset(tmp_path / "data", count=4)
    with open(instances[2]["filename"], "wb") as f:
        f.write(b"not an image")
    with_processes, inline = generators(instances, shuffle=False)
    try:
        with pytest.warns(
            UserWarning, match="Unreadable image skipped: .*" + os.path.basename(instances[2]["filename"])
        ):
            first = with_processes[0]
        with pytest.warns(UserWarning):
            assert_same_batch(first, inline[0])
        assert with_processes.bad_images == inline.bad_images == {2}
    finally:
        with_processes.close()


def test_a_failure_in_a_process_is_raised_with_its_traceback(tmp_path):
    instances = dataset(tmp_path / "data", count=2)
    for instance in instances:
        os.remove(instance["filename"])
    with_processes, _ = generators(instances)
    try:
        with pytest.raises(batch_processes.LoaderProcessError, match="(?s)batch 0.*None of the images"):
            with_processes[0]
    finally:
        with_processes.close()


def test_a_dead_process_is_one_error_and_close_leaves_nothing(tmp_path):
    instances = dataset(tmp_path / "data", count=3)
    with_processes, _ = generators(instances)
    loader = with_processes.process_loader()
    with_processes[0]
    name = loader.memory.name
    assert os.path.exists(f"/dev/shm/{name}") or sys.platform != "linux"
    loader.workers[0].kill()
    loader.workers[0].join()
    with pytest.raises(batch_processes.LoaderProcessError, match="stopped"):
        with_processes[1]
    with_processes.close()
    assert not any(worker.is_alive() for worker in loader.workers)
    assert not os.path.exists(f"/dev/shm/{name}")


def test_too_little_shared_memory_loads_with_threads_after_a_note(tmp_path, monkeypatch, capsys):
    instances = dataset(tmp_path / "data", count=3)
    real = os.statvfs(os.getcwd())
    tiny = os.statvfs_result((real.f_bsize, 4096, 10, 10, 10, *real[5:]))  # 40 KiB free
    monkeypatch.setattr(batch_processes.os, "statvfs", lambda path: tiny)
    with_processes, inline = generators(instances)
    assert_same_batch(with_processes[0], inline[0])
    assert with_processes._process_loader is None and not with_processes.processes
    out = capsys.readouterr().out
    assert "loader processes need" in out and "/dev/shm has 0 MiB free" in out and "--shm-size" in out


def test_slots_shrink_to_what_fits_but_not_below_one_per_process_and_one(monkeypatch, tmp_path):
    instances = dataset(tmp_path / "data", count=2)
    maker, _ = generators(instances)
    slot = sum(maker.buffer_sizes().values())
    for free_slots, expected in [(100, 8), (6, 6), (5, 5), (4, None)]:  # 4 processes: 8 wanted, 5 at least
        free = int(free_slots * slot / 0.9) + 1
        stat = os.statvfs_result((4096, 1, free, free, free, 0, 0, 0, 0, 255))
        monkeypatch.setattr(batch_processes.os, "statvfs", lambda path, stat=stat: stat)
        assert batch_processes.slots_that_fit(maker, 4)[0] == expected


@pytest.mark.slow
def test_a_script_without_a_main_guard_is_told_what_to_do(tmp_path):
    """Loader processes import the script that started them (multiprocessing's spawn), as PyTorch's do."""
    write_split(str(tmp_path / "data"), 2, seed=5, size=(96, 128))
    script = tmp_path / "train_here.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {ROOT!r})
        from batches import BatchGenerator
        from config import build_config, generator_args
        from preprocessing import TargetLayout, parse_annotation
        instances, _ = parse_annotation({str(tmp_path / "data" / "annotations")!r}, {str(tmp_path / "data" / "images")!r},
                                        {LABELS!r})
        layout = TargetLayout({LABELS!r}, (64, 64), (2, 2), [1.0, 1.0], 6, 3)
        args = {{**generator_args(build_config({{}}), "train"), "batch_size": 2, "workers": 2, "processes": True}}
        BatchGenerator(instances, layout, **args)[0]
    """)
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode != 0
    assert 'if __name__ == "__main__":' in done.stderr and 'train.loader to "threads"' in done.stderr


@pytest.mark.slow  # trains a model
def test_fit_trains_on_batches_from_loader_processes(tmp_path):
    import keras

    from frontend import YOLO

    instances = dataset(tmp_path / "data", count=4)
    yolo = YOLO("MobileNet", 64, LABELS, 6, [1.0, 1.0, 2.0, 2.0], backend_options={"alpha": 0.25},
                load_pretrained=False, freeze_backend=False)  # fmt: skip
    with_processes, inline = generators(instances)
    served = []
    original = with_processes.process_loader

    def recording():
        loader = original()
        served.append(loader)
        return loader

    with_processes.process_loader = recording
    yolo.model.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True)
    try:
        history = yolo.model.fit(with_processes, steps_per_epoch=2, epochs=1, verbose=0)
    finally:
        with_processes.close()
    assert served and np.isfinite(history.history["loss"][0])


@pytest.mark.slow  # trains a model
def test_a_loader_process_dying_in_a_run_stops_it_with_one_message(tmp_path, demo_like_config):
    """Under TensorFlow fit gets the loader's error wrapped in an UnknownError: the run says the loader's own words."""
    import multiprocessing

    import keras

    from stages import TrainingError
    from training import run_training

    class KillLoader(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                for child in multiprocessing.active_children():
                    if child.name.startswith("batches-"):
                        child.kill()
                        child.join()

    _, config = demo_like_config(tmp_path, nb_epochs=2, train_count=12, valid_count=4, batch_size=2, workers=2,
                                 loader="processes")  # fmt: skip
    with pytest.raises(TrainingError) as stopped:
        run_training(build_config(config), verbose=0, callbacks=[KillLoader()])
    assert str(stopped.value).startswith("loader process batches-")
    assert "killed by signal 9" in str(stopped.value) and "python main.py --resume" in str(stopped.value)
    assert not [child for child in multiprocessing.active_children() if child.name.startswith("batches-")]


@pytest.mark.parametrize(("loader", "workers", "expected"),
                         [("auto", 2, False), ("auto", 3, True), ("processes", 2, True), ("threads", 8, False)])  # fmt: skip
def test_auto_takes_processes_from_three_loaders(loader, workers, expected):
    args = generator_args(build_config({"train": {"loader": loader, "workers": workers}}), "train")
    assert args["processes"] is expected and args["workers"] == workers
