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
    with pytest.raises(DownloadError, match="Unknown weights 'nope'"):
        fetch_darknet("nope", str(tmp_path), registry)
