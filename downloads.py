"""Downloads that resume and check themselves, and what is built on them: darknet's YOLOv2 weights
and the PASCAL VOC datasets (archives unpacked safely).

python main.py weights                       # what can be fetched, and what is already in weights/
python main.py weights download yolov2-voc   # fetch cfg, names and .weights, then convert into weights/
python main.py data download voc2012         # fetch and unpack VOC2012 into data/VOCdevkit/VOC2012
"""

import hashlib
import http.client
import os
import tarfile
import urllib.error
import urllib.request

from tqdm import tqdm

from errors import UserError

DARKNET_RAW = "https://raw.githubusercontent.com/pjreddie/darknet/master"
PJREDDIE = "https://pjreddie.com/media/files"

# name -> what to fetch. sha256 is checked when given (None: not pinned, the size from the server and
# the cfg's exact byte count, which the converter checks, still are).
DARKNET_WEIGHTS = {
    "yolov2-voc": {"weights": f"{PJREDDIE}/yolov2-voc.weights", "cfg": f"{DARKNET_RAW}/cfg/yolov2-voc.cfg",
                   "names": f"{DARKNET_RAW}/data/voc.names", "sha256": None},
    "yolov2": {"weights": f"{PJREDDIE}/yolov2.weights", "cfg": f"{DARKNET_RAW}/cfg/yolov2.cfg",
               "names": f"{DARKNET_RAW}/data/coco.names", "sha256": None},
    "yolov2-tiny-voc": {"weights": f"{PJREDDIE}/yolov2-tiny-voc.weights",
                        "cfg": f"{DARKNET_RAW}/cfg/yolov2-tiny-voc.cfg", "names": f"{DARKNET_RAW}/data/voc.names",
                        "sha256": None},
    "yolov2-tiny": {"weights": f"{PJREDDIE}/yolov2-tiny.weights", "cfg": f"{DARKNET_RAW}/cfg/yolov2-tiny.cfg",
                    "names": f"{DARKNET_RAW}/data/coco.names", "sha256": None},
    # Darknet-19's ImageNet classifier, first 23 layers: darknet trains yolov2-voc.cfg from it
    "darknet19_448.conv.23": {"weights": f"{PJREDDIE}/darknet19_448.conv.23",
                              "cfg": f"{DARKNET_RAW}/cfg/yolov2-voc.cfg", "names": None, "sha256": None},
}  # fmt: skip

KERAS_APPLICATIONS = "https://storage.googleapis.com/tensorflow/keras-applications"
# ImageNet classification backbones (Keras 2 "notop" files) -> weights/<file>; the config names it in
# model.backend_weights. sha256 where the file was checked here (../shared/weights/SOURCES.md).
BACKBONE_WEIGHTS = {
    "mobilenet_0.25": {"url": f"{KERAS_APPLICATIONS}/mobilenet/mobilenet_2_5_224_tf_no_top.h5",
                       "sha256": "dbdb03ee2a22fd895301636cd328b234bb3a9952358f436d82f46b81e0d5b0bf",
                       "config": '"backend": "MobileNet", "backend_options": {"alpha": 0.25}'},
    "mobilenet_0.5": {"url": f"{KERAS_APPLICATIONS}/mobilenet/mobilenet_5_0_224_tf_no_top.h5", "sha256": None,
                      "config": '"backend": "MobileNet", "backend_options": {"alpha": 0.5}'},
    "mobilenet_0.75": {"url": f"{KERAS_APPLICATIONS}/mobilenet/mobilenet_7_5_224_tf_no_top.h5", "sha256": None,
                       "config": '"backend": "MobileNet", "backend_options": {"alpha": 0.75}'},
    "mobilenet_1.0": {"url": f"{KERAS_APPLICATIONS}/mobilenet/mobilenet_1_0_224_tf_no_top.h5", "sha256": None,
                      "config": '"backend": "MobileNet"'},
    # rcmalli/keras-squeezenet's release: SqueezeNet v1.1 with keras-yolo2's layer names
    "squeezenet": {"url": "https://github.com/rcmalli/keras-squeezenet/releases/download/v1.0/"
                          "squeezenet_weights_tf_dim_ordering_tf_kernels_notop.h5",
                   "sha256": None, "config": '"backend": "SqueezeNet"'},
}  # fmt: skip

VOC_SITE = "http://host.robots.ox.ac.uk/pascal/VOC"
# name -> the folder under VOCdevkit/ its archives unpack into, and (url, md5) of each archive
VOC_DATASETS = {
    "voc2012": {"folder": "VOC2012", "size": "about 2 GB",
                "archives": [(f"{VOC_SITE}/voc2012/VOCtrainval_11-May-2012.tar", "6cd6e144f989b92b3379bac3b3de84fd")]},
    "voc2007": {"folder": "VOC2007", "size": "about 0.9 GB",
                "archives": [(f"{VOC_SITE}/voc2007/VOCtrainval_06-Nov-2007.tar", "c52e279531787c972589f7e41ab4ae64"),
                             (f"{VOC_SITE}/voc2007/VOCtest_06-Nov-2007.tar", "b6e924de25625d8de591ea690078ad9f")]},
}  # fmt: skip

CHUNK = 1 << 20


class DownloadError(UserError):
    """A failed or corrupt download, reported without a traceback; partial files are kept for resuming."""


def download(url, path, sha256=None, md5=None, progress=True, timeout=60):
    """Fetches `url` into `path`, resuming `path`.part when a previous attempt was cut off, checking the
    size the server announced and, when given, the sha256 or md5. Returns `path`; an existing `path` is kept."""
    if os.path.exists(path):
        return path
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    part = path + ".part"
    have = os.path.getsize(part) if os.path.exists(part) else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the range starts at the end: the part file is already complete
            return _finish(part, path, {"sha256": sha256, "md5": md5}, url)
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(f"{url}: cannot connect ({getattr(e, 'reason', e)}). Are you online?") from None
    with response:
        if have and response.status != 206:
            have = 0  # the server ignored the range: start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with (
            open(part, "ab" if have else "wb") as f,
            tqdm(
                total=total, initial=have, unit="B", unit_scale=True, desc=os.path.basename(path), disable=not progress
            ) as bar,
        ):
            try:
                while chunk := response.read(CHUNK):
                    f.write(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as e:
                raise DownloadError(_cut_off(url, part, total, e)) from None
    size = os.path.getsize(part)
    if total is not None and size != total:
        raise DownloadError(_cut_off(url, part, total, "connection closed early"))
    return _finish(part, path, {"sha256": sha256, "md5": md5}, url)


def _cut_off(url, part, total, reason):
    expected = "?" if total is None else f"{total:,}"
    return (
        f"{url}: transfer stopped at {os.path.getsize(part):,} of {expected} bytes ({reason!r}). "
        f"Run the same command again to resume from {part}."
    )


def _finish(part, path, checksums, url):
    for algorithm, expected in checksums.items():
        if expected:
            digest = file_digest(part, algorithm)
            if digest != expected:
                os.remove(part)
                raise DownloadError(f"{url}: checksum mismatch ({algorithm} {digest}, expected {expected}); the "
                                    "file was removed.")  # fmt: skip
    os.replace(part, path)
    return path


def file_digest(path, algorithm="sha256"):
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def unknown_weights(name, registry):
    """`weights download NAME` takes a darknet or a backbone name: a wrong one is told both lists."""
    known = {**DARKNET_WEIGHTS, **BACKBONE_WEIGHTS, **registry}
    return DownloadError(f"Unknown weights {name!r}. Available: {', '.join(known)}")


def fetch_darknet(name, out_dir="weights", registry=None, progress=True):
    """Downloads the cfg, class names and .weights of `name` into out_dir/darknet/, converts them into
    out_dir (see darknet.convert) and returns the conversion result."""
    from darknet import convert

    registry = DARKNET_WEIGHTS if registry is None else registry
    if name not in registry:
        raise unknown_weights(name, registry)
    entry, folder = registry[name], os.path.join(out_dir, "darknet")
    cfg = download(entry["cfg"], os.path.join(folder, os.path.basename(entry["cfg"])), progress=False)
    labels = None
    if entry["names"]:
        names = download(entry["names"], os.path.join(folder, os.path.basename(entry["names"])), progress=False)
        with open(names) as f:
            labels = [line.strip() for line in f if line.strip()]
    weights = download(entry["weights"], os.path.join(folder, os.path.basename(entry["weights"])), entry["sha256"],
                       progress=progress)  # fmt: skip
    return convert(cfg, weights, out_dir, labels=labels, backend_only=labels is None)


def fetch_backbone(name, out_dir="weights", registry=None, progress=True):
    """Downloads ImageNet backbone weights `name` into out_dir/<its file name> -> (path, the config keys)."""
    registry = BACKBONE_WEIGHTS if registry is None else registry
    if name not in registry:
        raise unknown_weights(name, registry)
    entry = registry[name]
    path = download(entry["url"], os.path.join(out_dir, os.path.basename(entry["url"])), entry["sha256"],
                    progress=progress)  # fmt: skip
    return path, entry["config"]


def extract_tar(archive, dest, progress=True):
    """Unpacks a tar archive into `dest` with tarfile's "data" filter (PEP 706). Every member is checked
    before anything is written: one that would land outside `dest` (an absolute path, "..", a link
    pointing out) or a device file refuses the whole archive. A finished extraction leaves
    `<archive>.extracted`, so running again does not unpack it twice."""
    marker = archive + ".extracted"
    if os.path.exists(marker):
        return
    dest = os.path.abspath(dest)
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for member in members:
                if os.path.isabs(member.name):  # the filter would strip the "/": no VOC archive has one
                    raise DownloadError(f"{archive}: refused to unpack it: member {member.name!r} has an absolute path")
                tarfile.data_filter(member, dest)
            bar = tqdm(members, desc=f"unpack {os.path.basename(archive)}", unit="file", disable=not progress)
            for member in bar:
                tar.extract(member, dest, filter="data")
    except tarfile.FilterError as e:
        raise DownloadError(f"{archive}: refused to unpack it: member {e.tarinfo.name!r} {e}") from None
    except (tarfile.TarError, EOFError) as e:
        raise DownloadError(f"{archive} is not a readable tar archive ({e}); delete it and download it again") from None
    open(marker, "w").close()


def fetch_voc(name, root="data", progress=True):
    """Downloads a PASCAL VOC dataset's archives into root/downloads/ (resumable, md5-checked), unpacks them
    into root and returns the dataset folder, root/VOCdevkit/<VOC2012 or VOC2007>."""
    if name not in VOC_DATASETS:
        raise DownloadError(f"Unknown dataset {name!r}. Available: {', '.join(VOC_DATASETS)}")
    entry = VOC_DATASETS[name]
    for url, md5 in entry["archives"]:
        archive = download(url, os.path.join(root, "downloads", os.path.basename(url)), md5=md5, progress=progress)
        extract_tar(archive, root, progress)
    voc_dir = os.path.join(root, "VOCdevkit", entry["folder"])
    if not os.path.isdir(os.path.join(voc_dir, "Annotations")):
        raise DownloadError(f"The {name} archives did not unpack into {voc_dir}: are they the VOC archives?")
    return voc_dir
