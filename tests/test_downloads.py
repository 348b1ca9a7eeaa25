"""Downloads against a local HTTP server on 127.0.0.1: resume after a cut-off transfer, checksums, 404,
and fetching + converting a darknet file. Nothing here touches the internet."""

import hashlib
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from darknet_reference import cfg_text, random_weights

from darknet import parse_cfg
from downloads import DownloadError, download, fetch_darknet
from frontend import YOLO


class Files(BaseHTTPRequestHandler):
    """Serves `files` {path: bytes} with Range support; paths in `cut` send half the body, then hang up."""

    files, cut, requests = {}, set(), []

    def do_GET(self):
        type(self).requests.append((self.path, self.headers.get("Range")))
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if self.path in self.cut:
            self.cut.discard(self.path)  # only the first attempt is cut off
            self.wfile.write(body[start : start + (len(body) - start) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    Files.files, Files.cut, Files.requests = {}, set(), []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Files)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


def test_download_checks_size_and_sha256(server, tmp_path):
    body = np.random.default_rng(0).bytes(300_000)
    Files.files["/a.bin"] = body
    path = download(f"{server}/a.bin", str(tmp_path / "a.bin"), hashlib.sha256(body).hexdigest(), progress=False)
    assert open(path, "rb").read() == body and not os.path.exists(path + ".part")
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download(f"{server}/a.bin", str(tmp_path / "b.bin"), "0" * 64, progress=False)
    assert not os.path.exists(tmp_path / "b.bin") and not os.path.exists(tmp_path / "b.bin.part")


def test_cut_off_transfer_resumes_where_it_stopped(server, tmp_path):
    body = np.random.default_rng(1).bytes(500_000)
    Files.files["/w.weights"], Files.cut = body, {"/w.weights"}
    target = str(tmp_path / "w.weights")
    with pytest.raises(DownloadError, match=r"transfer stopped at 250,000 of 500,000 bytes.*Run the same command"):
        download(f"{server}/w.weights", target, hashlib.sha256(body).hexdigest(), progress=False)
    assert os.path.getsize(target + ".part") == 250_000
    download(f"{server}/w.weights", target, hashlib.sha256(body).hexdigest(), progress=False)
    assert open(target, "rb").read() == body
    assert Files.requests[-1] == ("/w.weights", "bytes=250000-")  # only the rest was asked for


def test_missing_file_is_a_clear_error(server, tmp_path):
    with pytest.raises(DownloadError, match=r"/nothing.weights: HTTP 404"):
        download(f"{server}/nothing.weights", str(tmp_path / "n"), progress=False)
    with pytest.raises(DownloadError, match="cannot connect"):
        download("http://127.0.0.1:9/x", str(tmp_path / "x"), progress=False, timeout=5)


def test_fetch_darknet_prefix_downloads_and_converts(server, tmp_path):
    """A darknet19_448.conv.23-like prefix (first 3 convs of tiny YOLO) fetched and converted to a backend file."""
    cfg = cfg_text(kind="tiny")
    (tmp_path / "t.cfg").write_text(cfg)
    data, convs = random_weights(parse_cfg(str(tmp_path / "t.cfg")), np.random.default_rng(0))
    prefix_floats = sum(sum(a.size for a in c.values()) for c in convs[:3])
    body = data[: 20 + 4 * prefix_floats]
    Files.files.update({"/cfg/tiny.cfg": cfg.encode(), "/files/tiny.conv.3": body})
    registry = {"tiny.conv.3": {"weights": f"{server}/files/tiny.conv.3", "cfg": f"{server}/cfg/tiny.cfg",
                                "names": None, "sha256": hashlib.sha256(body).hexdigest()}}  # fmt: skip
    result = fetch_darknet("tiny.conv.3", str(tmp_path / "weights"), registry, progress=False)
    assert result["layers"] == ["conv_1", "conv_2", "conv_3"] and result["detector"] is None
    yolo = YOLO("Tiny Yolo", 64, ["a"], 1, [1, 1], backend_weights=result["backend"])
    np.testing.assert_allclose(
        yolo.backend_model.get_layer("conv_2").kernel.numpy(), convs[1]["kernel"].transpose(2, 3, 1, 0), rtol=1e-6
    )
    with pytest.raises(DownloadError, match="Unknown weights 'nope'.*yolov2-voc.*mobilenet_0.25.*squeezenet"):
        fetch_darknet("nope", str(tmp_path), registry)  # main.py sends any name it does not know here


def voc_archive(folder, splits, count=8, extra=()):
    """A small VOC-layout tar: VOCdevkit/<folder>/{JPEGImages, Annotations, ImageSets/Main/<split>.txt} of
    generated shapes; `splits` {name: [image indices]}; `extra` TarInfo members (hostile ones) added last."""
    import io
    import tarfile
    import tempfile

    from demo_data import write_split

    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory() as src, tarfile.open(fileobj=buffer, mode="w") as tar:
        write_split(src, count, seed=3, size=(96, 96))
        base = f"VOCdevkit/{folder}"
        for kind, sub in (("images", "JPEGImages"), ("annotations", "Annotations")):
            for name in sorted(os.listdir(os.path.join(src, kind))):
                tar.add(os.path.join(src, kind, name), f"{base}/{sub}/{name}")
        for split, indices in splits.items():
            text = "".join(f"shapes_{i:04d}\n" for i in indices).encode()
            info = tarfile.TarInfo(f"{base}/ImageSets/Main/{split}.txt")
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text))
        for info in extra:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return buffer.getvalue()


@pytest.fixture
def voc_server(server, monkeypatch):
    """The VOC2012 archive of 8 images (train 0-5, val 6-7) served locally, registered as "voc2012"."""
    import downloads

    body = voc_archive("VOC2012", {"train": range(6), "val": range(6, 8)})
    Files.files["/voc2012/VOCtrainval_11-May-2012.tar"] = body
    url = f"{server}/voc2012/VOCtrainval_11-May-2012.tar"
    entry = {"folder": "VOC2012", "size": "tiny", "archives": [(url, hashlib.md5(body).hexdigest())]}
    monkeypatch.setitem(downloads.VOC_DATASETS, "voc2012", entry)
    return url


def test_voc2012_download_unpacks_and_trains_on_train_and_validates_on_val(voc_server, tmp_path):
    import main as cli
    from config import build_config
    from datasets import load_datasets

    voc_dir = cli.main(["data", "download", "voc2012", "--out", str(tmp_path / "data")])
    assert voc_dir == str(tmp_path / "data" / "VOCdevkit" / "VOC2012")
    assert len(os.listdir(os.path.join(voc_dir, "JPEGImages"))) == 8
    config = build_config({"model": {"labels": ["ellipse", "rectangle", "triangle"]}, "train": {"voc_dir": voc_dir}})
    train, valid, _ = load_datasets(config)
    stems = lambda instances: sorted(os.path.basename(i["filename"])[:-4] for i in instances)  # noqa: E731
    assert stems(train) == [f"shapes_{i:04d}" for i in range(6)] and stems(valid) == ["shapes_0006", "shapes_0007"]
    asked = len(Files.requests)
    cli.main(["data", "download", "voc2012", "--out", str(tmp_path / "data")])  # already there: nothing fetched
    assert len(Files.requests) == asked


def test_voc_download_resumes_a_cut_transfer_and_checks_the_md5(voc_server, tmp_path):
    from downloads import fetch_voc

    path = voc_server.split("127.0.0.1", 1)[1].split("/", 1)[1]
    Files.cut = {"/" + path}
    with pytest.raises(DownloadError, match="transfer stopped at .*Run the same command again to resume"):
        fetch_voc("voc2012", str(tmp_path), progress=False)
    assert fetch_voc("voc2012", str(tmp_path), progress=False).endswith("VOC2012")
    assert Files.requests[-1][1] and Files.requests[-1][1].startswith("bytes=")  # only the rest was asked for

    import downloads

    downloads.VOC_DATASETS["voc2012"]["archives"] = [(voc_server, "0" * 32)]
    with pytest.raises(DownloadError, match="checksum mismatch \\(md5 "):
        fetch_voc("voc2012", str(tmp_path / "other"), progress=False)
    downloads.VOC_DATASETS["voc2012"]["archives"] = [(voc_server + "x", None)]
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch_voc("voc2012", str(tmp_path / "third"), progress=False)


def _hostile(kind):
    import tarfile

    info = tarfile.TarInfo({"dotdot": "../evil.txt", "absolute": "/abs_evil.txt", "symlink": "VOCdevkit/link",
                            "device": "VOCdevkit/dev"}[kind])  # fmt: skip
    if kind == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, "../../outside.txt"
    elif kind == "device":
        info.type = tarfile.CHRTYPE
    else:
        info.size = 1
    return info


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "device"])
def test_an_archive_member_escaping_the_target_folder_is_refused(tmp_path, kind):
    from downloads import extract_tar

    archive = tmp_path / "hostile.tar"
    archive.write_bytes(voc_archive("VOC2012", {"train": range(2)}, count=2, extra=[_hostile(kind)]))
    dest = tmp_path / "deep" / "dest"
    dest.mkdir(parents=True)
    with pytest.raises(DownloadError, match="refused to unpack it"):
        extract_tar(str(archive), str(dest), progress=False)
    assert os.listdir(dest) == []  # checked before anything was written
    assert not (tmp_path / "deep" / "evil.txt").exists() and not os.path.exists(archive.as_posix() + ".extracted")


def test_training_command_fetches_a_missing_voc_with_download(voc_server, tmp_path, capsys):
    import json

    import main as cli

    voc_dir = tmp_path / "data" / "VOCdevkit" / "VOC2012"
    config = {"model": {"labels": ["ellipse", "rectangle", "triangle"], "input_size": 96},
              "train": {"voc_dir": str(voc_dir), "runs_dir": str(tmp_path / "runs")}}  # fmt: skip
    (tmp_path / "c.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit) as stop:  # not in a terminal and no --download: a message, no prompt
        cli.main(["anchors", "--config", str(tmp_path / "c.json"), "-n", "2"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "python main.py data download voc2012" in err and "--download" in err
    result = cli.main(["anchors", "--config", str(tmp_path / "c.json"), "-n", "2", "--download"])
    assert len(result["anchors"]) == 4 and (voc_dir / "Annotations").is_dir()


def test_voc2007_plus_2012_trainval_against_voc2007_test(tmp_path):
    """configs/voc0712.json's layout: training on both trainval sets, validating on VOC2007 test."""
    import io
    import json
    import tarfile

    from config import build_config
    from datasets import load_datasets

    for folder, splits in (("VOC2007", {"trainval": range(4), "test": range(4, 8)}),
                           ("VOC2012", {"trainval": range(5)})):  # fmt: skip
        with tarfile.open(fileobj=io.BytesIO(voc_archive(folder, splits))) as tar:
            tar.extractall(tmp_path, filter="data")
    with open(os.path.join(os.path.dirname(__file__), "..", "configs", "voc0712.json")) as f:
        raw = json.load(f)
    raw["model"]["labels"] = ["ellipse", "rectangle", "triangle"]
    raw["train"]["voc_dir"] = [str(tmp_path / "VOCdevkit" / name) for name in ("VOC2007", "VOC2012")]
    raw["valid"]["valid_voc_dir"] = str(tmp_path / "VOCdevkit" / "VOC2007")
    train, valid, _ = load_datasets(build_config(raw))
    assert sorted(i["filename"].split("VOCdevkit")[1][1:8] for i in train) == ["VOC2007"] * 4 + ["VOC2012"] * 5
    assert len(valid) == 4 and all("VOC2007" in i["filename"] for i in valid)


def test_fetch_backbone_writes_the_file_a_config_names(server, tmp_path):
    """An ImageNet backbone file (here the shared MobileNet 0.25 one when present, else random bytes) fetched
    under its own name; a checksum that does not match removes it."""
    from conftest import shared_path

    from downloads import fetch_backbone

    shared = shared_path("weights", "mobilenet_2_5_224_tf_no_top.h5")
    body = open(shared, "rb").read() if shared else np.random.default_rng(3).bytes(20_000)
    Files.files["/mobilenet/mobilenet_2_5_224_tf_no_top.h5"] = body
    registry = {"mobilenet_0.25": {"url": f"{server}/mobilenet/mobilenet_2_5_224_tf_no_top.h5",
                                   "sha256": hashlib.sha256(body).hexdigest(), "config": '"backend": "MobileNet"'}}  # fmt: skip
    path, keys = fetch_backbone("mobilenet_0.25", str(tmp_path / "weights"), registry, progress=False)
    assert path == str(tmp_path / "weights" / "mobilenet_2_5_224_tf_no_top.h5") and open(path, "rb").read() == body
    if shared:  # the real file loads as the backend's weights
        yolo = YOLO("MobileNet", 96, ["a"], 1, [1, 1], backend_options={"alpha": 0.25}, backend_weights=path)
        assert yolo.backend_weights == path
    registry["mobilenet_0.25"]["sha256"] = "0" * 64
    with pytest.raises(DownloadError, match="checksum mismatch"):
        fetch_backbone("mobilenet_0.25", str(tmp_path / "other"), registry, progress=False)
    with pytest.raises(DownloadError, match="Unknown weights 'nope'.*yolov2-voc.*mobilenet_0.25"):
        fetch_backbone("nope", str(tmp_path), registry)


def test_the_registered_mobilenet_checksum_is_the_shared_files():
    from conftest import shared_path

    from downloads import BACKBONE_WEIGHTS, file_digest

    shared = shared_path("weights", "mobilenet_2_5_224_tf_no_top.h5")
    if not shared:
        pytest.skip("../shared/weights is not present")
    assert file_digest(shared) == BACKBONE_WEIGHTS["mobilenet_0.25"]["sha256"]
