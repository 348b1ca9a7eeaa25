"""runs.best_epoch: which epoch the best checkpoint comes from, and when that best is suspect."""

from runs import best_epoch

HEADER = "epoch,loss,val_loss,val_map50\n"


def write(tmp_path, rows, header=HEADER):
    path = tmp_path / "history.csv"
    path.write_text(header + "".join(rows))
    return str(path)


def test_best_by_map_skips_epochs_without_one(tmp_path):
    path = write(tmp_path, ["1,9,8,0.10\n", "2,8,7,NA\n", "3,7,6,0.30\n", "4,6,5,NA\n", "5,5,4,0.25\n"])
    assert best_epoch(path) == {"epoch": 3, "by": "val_map50", "value": 0.30, "warning": None}


def test_a_map_that_never_rose_is_a_warning(tmp_path):
    """The frozen-backbone, 1x1-head case: the loss falls, the mAP falls from the untrained model's."""
    path = write(tmp_path, ["1,30,30,0.0948\n", "2,20,19,NA\n", "5,5,4,0.0176\n", "30,3,3,0.0164\n"])
    best = best_epoch(path)
    assert best["epoch"] == 1 and best["value"] == 0.0948
    assert best["warning"] == ("the validation mAP@0.5 never rose above its value at epoch 1 (0.0948; last 0.0164 "
                               "at epoch 30), so the saved best is the model of epoch 1")  # fmt: skip


def test_without_map_the_validation_loss_decides(tmp_path):
    path = write(tmp_path, ["1,9,8\n", "2,8,6\n", "3,7,7\n"], header="epoch,loss,val_loss\n")
    assert best_epoch(path) == {"epoch": 2, "by": "val_loss", "value": 6.0, "warning": None}
    assert best_epoch(str(tmp_path / "absent.csv")) is None
    single = write(tmp_path, ["1,9,8,0.5\n"])
    assert best_epoch(single)["warning"] is None  # one evaluation: nothing to compare
