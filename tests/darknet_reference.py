"""An independent darknet forward pass in numpy, written from darknet's C source, to check converted models.

convolutional_layer.c (im2col + gemm, add_bias / normalize_cpu + scale_bias), activations.c (leaky .1),
maxpool_layer.c (forward_maxpool_layer: padding = size - 1, offsets -padding/2, out-of-range taps skipped),
route_layer.c (channel concatenation), reorg_layer.c (reorg_cpu(..., forward=0) with the input sizes).
Arrays are CHW for one image, float64. Also writes darknet .weights files and YOLOv2 cfg text.
"""

import numpy as np


def cfg_text(kind="full", classes=20, anchors=(1.08, 1.19, 3.42, 4.41, 6.63, 11.38, 9.42, 5.11, 16.62, 10.52),
             size=416, tiny_final=1024):  # fmt: skip
    """yolov2-voc.cfg / yolov2-tiny-voc.cfg-shaped cfg text (layers only; training options left out)."""

    def conv(filters, size, bn=True, act="leaky"):
        return f"[convolutional]\n{'batch_normalize=1' if bn else ''}\nfilters={filters}\nsize={size}\nstride=1\npad=1\nactivation={act}\n"

    def pool(stride=2):
        return f"[maxpool]\nsize=2\nstride={stride}\n"

    parts = [f"[net]\nbatch=1\nwidth={size}\nheight={size}\nchannels=3\n"]
    if kind == "full":
        stages = [[(32, 3)], [(64, 3)], [(128, 3), (64, 1), (128, 3)], [(256, 3), (128, 1), (256, 3)],
                  [(512, 3), (256, 1), (512, 3), (256, 1), (512, 3)],
                  [(1024, 3), (512, 1), (1024, 3), (512, 1), (1024, 3)]]  # fmt: skip
        for i, stage in enumerate(stages):
            parts += [conv(f, k) for f, k in stage] + ([pool()] if i < len(stages) - 1 else [])
        parts += [conv(1024, 3), conv(1024, 3), "[route]\nlayers=-9\n", conv(64, 1), "[reorg]\nstride=2\n",
                  "[route]\nlayers=-1,-4\n", conv(1024, 3)]  # fmt: skip
    else:
        for f in (16, 32, 64, 128, 256):
            parts += [conv(f, 3), pool()]
        parts += [conv(512, 3), pool(1), conv(1024, 3), conv(tiny_final, 3)]
    n = len(anchors) // 2
    parts += [conv(n * (5 + classes), 1, bn=False, act="linear"),
              f"[region]\nanchors={','.join(map(str, anchors))}\nbias_match=1\nclasses={classes}\ncoords=4\n"
              f"num={n}\nsoftmax=1\n"]  # fmt: skip
    return "\n".join(parts)


def random_weights(sections, rng, major=0, minor=2, seen=32013312, channels=3):
    """A .weights file's bytes for a cfg, with plausible random values (small variances included, where
    darknet's epsilon placement matters) -> (bytes, per-conv arrays)."""
    header = np.array([major, minor, 0], "<i4").tobytes()
    header += np.array([seen], "<u8" if major * 10 + minor >= 2 else "<i4").tobytes()
    body, convs = [], []
    for shape in conv_shapes(sections, channels):
        n, c, k = shape
        layer = {"biases": rng.normal(0, 0.1, n), "kernel": rng.normal(0, np.sqrt(2.0 / (c * k * k)), (n, c, k, k))}
        if shape.bn:
            small = rng.random(n) < 0.2
            layer["variance"] = np.where(small, rng.uniform(1e-6, 1e-3, n), rng.uniform(0.5, 2, n))
            # scales shrink with the deviation so activations stay of order 1 through the whole net
            layer["scales"] = rng.uniform(0.5, 1.5, n) * np.where(small, np.sqrt(layer["variance"]), 1.0)
            layer["mean"] = rng.normal(0, 0.1, n)
            order = ("biases", "scales", "mean", "variance", "kernel")
        else:
            order = ("biases", "kernel")
        body += [layer[key].astype("<f4").ravel() for key in order]
        convs.append({key: layer[key].astype(np.float32).astype(np.float64) for key in order})
    return header + np.concatenate(body).tobytes(), convs


class ConvShape(tuple):
    bn = True


def conv_shapes(sections, channels=3):
    """(filters, input channels, size) of each conv, following the channel count through the cfg."""
    out_channels, shapes, c = [], [], channels
    for s in sections[1:]:
        t = s["type"]
        if t == "convolutional":
            shape = ConvShape((int(s["filters"]), c, int(s["size"])))
            shape.bn = s.get("batch_normalize") == "1"
            shapes.append(shape)
            c = int(s["filters"])
        elif t == "route":
            c = sum(out_channels[_route_index(i, len(out_channels))] for i in s["layers"].split(","))
        elif t == "reorg":
            c *= int(s["stride"]) ** 2
        out_channels.append(c)
    return shapes


def _route_index(text, current):
    i = int(text)
    return current + i if i < 0 else i


def forward(sections, convs, image):
    """Darknet's network output (CHW) for one image (CHW, 0..1) -> the last conv's output (before [region])."""
    outputs, x, k = [], image.astype(np.float64), 0
    for s in sections[1:]:
        t = s["type"]
        if t == "convolutional":
            x = convolutional(x, convs[k], int(s["size"]), int(s.get("stride", 1)), int(s.get("pad", 0)),
                              s.get("batch_normalize") == "1", s["activation"])  # fmt: skip
            k += 1
        elif t == "maxpool":
            size, stride = int(s["size"]), int(s["stride"])
            x = maxpool(x, size, stride, int(s.get("padding", size - 1)))
        elif t == "route":
            x = np.concatenate([outputs[_route_index(i, len(outputs))] for i in s["layers"].split(",")], axis=0)
        elif t == "reorg":
            x = reorg(x, int(s["stride"]))
        # [region] activates its input in place; the raw conv output before it is what gets compared
        outputs.append(x)
    return x


def convolutional(x, layer, size, stride, pad, bn, activation):
    padding = size // 2 if pad else 0
    c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (padding, padding), (padding, padding)))
    out_h, out_w = (h + 2 * padding - size) // stride + 1, (w + 2 * padding - size) // stride + 1
    # im2col: rows (c, ky, kx), columns (y, x)
    cols = np.empty((c, size, size, out_h, out_w))
    for ky in range(size):
        for kx in range(size):
            cols[:, ky, kx] = xp[:, ky : ky + stride * out_h : stride, kx : kx + stride * out_w : stride]
    n = layer["kernel"].shape[0]
    y = (layer["kernel"].reshape(n, -1) @ cols.reshape(-1, out_h * out_w)).reshape(n, out_h, out_w)
    if bn:
        y = (y - layer["mean"][:, None, None]) / (np.sqrt(layer["variance"])[:, None, None] + 0.000001)
        y = y * layer["scales"][:, None, None]
    y = y + layer["biases"][:, None, None]
    if activation == "leaky":
        y = np.where(y > 0, y, 0.1 * y)
    return y


def maxpool(x, size, stride, padding):
    c, h, w = x.shape
    out_h, out_w = (h + padding - size) // stride + 1, (w + padding - size) // stride + 1
    offset = -(padding // 2)
    out = np.full((c, out_h, out_w), -np.inf)
    for i in range(out_h):
        for j in range(out_w):
            for n in range(size):
                for m in range(size):
                    cur_h, cur_w = offset + i * stride + n, offset + j * stride + m
                    if 0 <= cur_h < h and 0 <= cur_w < w:
                        out[:, i, j] = np.maximum(out[:, i, j], x[:, cur_h, cur_w])
    return out


def reorg(x, stride):
    """reorg_cpu(input, w, h, c, batch, stride, forward=0, output) as forward_reorg_layer calls it."""
    c, h, w = x.shape
    flat, out = x.reshape(-1), np.zeros(x.size)
    out_c = c // (stride * stride)
    for k in range(c):
        for j in range(h):
            for i in range(w):
                in_index = i + w * (j + h * k)
                c2, offset = k % out_c, k // out_c
                w2, h2 = i * stride + offset % stride, j * stride + offset // stride
                out[in_index] = flat[w2 + w * stride * (h2 + h * stride * c2)]
    return out.reshape(c * stride * stride, h // stride, w // stride)
