"""Which pixel frame an annotation's boxes are in, and moving them into the frame training and evaluation see.

OpenCV decodes a JPEG turned as its EXIF orientation says (a phone photo taken upright comes out upright), but
annotation tools such as LabelImg draw on the stored pixels and write the stored size into <size>. An annotated
image whose file was resized after labelling has a <size> that differs from the file too. Training and evaluation
both read the boxes the parse leaves, so the parse moves them into the decoded frame once: turned with the pixels
when <size> is the stored size of a JPEG with an orientation, scaled when <size> is another size.
"""

import os

from PIL import Image, UnidentifiedImageError

from images import NOT_REGULAR, is_regular_file

EXIF_ORIENTATION = 0x0112
SWAPS_SIDES = (5, 6, 7, 8)  # the orientations that turn the image by 90 degrees


def image_header(path):
    """-> (decoded width, decoded height, EXIF orientation, stored width, stored height) from the file's header
    (no decoding), or (None, reason) when it is not a readable image."""
    try:
        if not is_regular_file(path):
            return None, NOT_REGULAR
        if os.path.getsize(path) == 0:
            return None, "is empty (zero bytes)"
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(EXIF_ORIENTATION, 1) if image.format == "JPEG" else 1
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        return None, f"is not a readable image ({type(e).__name__}: {str(e)[:80]})"
    if orientation not in range(1, 9):
        orientation = 1
    decoded = (height, width) if orientation in SWAPS_SIDES else (width, height)
    return (*decoded, orientation, width, height), None


def turn_point(x, y, orientation, width, height):
    """A point in the stored frame (continuous pixels, `width` x `height`) -> the decoded frame (EXIF applied)."""
    return {
        1: (x, y), 2: (width - x, y), 3: (width - x, height - y), 4: (x, height - y),
        5: (y, x), 6: (height - y, x), 7: (height - y, width - x), 8: (y, width - x),
    }[orientation]  # fmt: skip


def turn_voc_box(box, orientation, width, height):
    """A VOC box (1-based inclusive xmin, ymin, xmax, ymax) in the stored frame -> the decoded frame."""
    xmin, ymin, xmax, ymax = box
    corners = [turn_point(x, y, orientation, width, height) for x, y in ((xmin - 1, ymin - 1), (xmax, ymax))]
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    return [min(xs) + 1, min(ys) + 1, max(xs), max(ys)]


def fit_to_image(instance, header, report, path):
    """Moves the instance's boxes (VOC pixels in obj["box"], before clipping) into the decoded image's frame and
    gives it the decoded size; counts what it turned or scaled."""
    width, height, orientation, stored_w, stored_h = header
    size = (instance["width"], instance["height"])
    stored_frame = orientation != 1 and size == (stored_w, stored_h)
    if stored_frame or (size[0] > 0 and size[1] > 0 and size != (width, height)):
        if stored_frame:
            for obj in instance["object"]:
                obj["box"] = turn_voc_box(obj["box"], orientation, stored_w, stored_h)
            report.turned_images.append((path, f"EXIF orientation {orientation}: boxes turned with the pixels"))
        else:
            sx, sy = width / size[0], height / size[1]
            for obj in instance["object"]:
                xmin, ymin, xmax, ymax = obj["box"]
                obj["box"] = [(xmin - 1) * sx + 1, (ymin - 1) * sy + 1, xmax * sx, ymax * sy]
            report.turned_images.append((path, f"<size> {size[0]}x{size[1]}, the image {width}x{height}: boxes "
                                               "scaled to the image"))  # fmt: skip
    instance["width"], instance["height"] = width, height
    return instance
