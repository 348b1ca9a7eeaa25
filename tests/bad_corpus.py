"""A VOC folder pair of broken and odd inputs, written next to a few good demo images, and what parsing must say
of each: the corpus the bad-input harness trains, evaluates and predicts over."""

import os

import cv2
import numpy as np
from PIL import Image

from demo_data import VOC_OBJECT, VOC_XML, write_split

BOX = (20, 20, 60, 70)  # VOC pixels, inside a 128 x 128 image


def xml(filename, objects=(("ellipse", BOX),), width=128, height=128):
    body = "".join(VOC_OBJECT.format(name=n, xmin=b[0], ymin=b[1], xmax=b[2], ymax=b[3]) for n, b in objects)
    return VOC_XML.format(filename=filename, width=width, height=height, objects=body)


def shapes_image(size=(128, 128), value=90):
    image = np.full((*size, 3), value, np.uint8)
    cv2.rectangle(image, (20, 20), (60, 70), (230, 40, 40), -1)
    return image


def jpeg_bytes(image, quality=90):
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


def write_corpus(root):
    """-> {case: what the parse report must name of it (a substring of its summary)}, with the files in
    root/images and root/annotations; the good images are shapes_0000 ... shapes_0005."""
    images, annotations = os.path.join(root, "images"), os.path.join(root, "annotations")
    write_split(root, 6, seed=5, size=(128, 128))

    def image_file(name, data):
        with open(os.path.join(images, name), "wb") as f:
            f.write(data)

    def annotation(name, text):
        with open(os.path.join(annotations, name + ".xml"), "w", encoding="utf-8") as f:
            f.write(text)

    good = jpeg_bytes(shapes_image())
    expected = {}
    image_file("zero_byte.jpg", b"")
    annotation("zero_byte", xml("zero_byte.jpg"))
    expected["zero_byte"] = "zero_byte.jpg is empty"
    image_file("text.jpg", b"this is not a JPEG, it is text\n" * 20)
    annotation("text", xml("text.jpg"))
    expected["text"] = "text.jpg is not a readable image"
    image_file("truncated.jpg", good[: len(good) // 2])
    annotation("truncated", xml("truncated.jpg"))
    expected["truncated"] = None  # its header reads; decoding notes it (decode_image)
    Image.fromarray(shapes_image()).convert("CMYK").save(os.path.join(images, "cmyk.jpg"))
    annotation("cmyk", xml("cmyk.jpg"))
    expected["cmyk"] = None
    cv2.imwrite(os.path.join(images, "sixteen.png"), shapes_image().astype(np.uint16) * 257)
    annotation("sixteen", xml("sixteen.png"))
    expected["sixteen"] = None
    Image.fromarray(shapes_image()).convert("P", palette=Image.Palette.ADAPTIVE).save(os.path.join(images, "pal.png"))
    annotation("palette", xml("pal.png"))
    expected["palette"] = None
    cv2.imwrite(os.path.join(images, "one_pixel.png"), np.zeros((1, 1, 3), np.uint8))
    annotation("one_pixel", xml("one_pixel.png", width=1, height=1))
    expected["one_pixel"] = "boxes of zero area were dropped"
    image_file("large.jpg", jpeg_bytes(shapes_image((3000, 4000)), quality=50))
    annotation("large", xml("large.jpg", width=4000, height=3000))
    expected["large"] = None
    annotation("not_xml", "this is not XML")
    expected["not_xml"] = "not_xml.xml: unreadable XML"
    annotation("cut_xml", xml("shapes_0000.jpg")[:90])
    expected["cut_xml"] = "cut_xml.xml: unreadable XML"
    laughs = '<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">' + "".join(
        f'<!ENTITY {chr(98 + k)} "' + f"&{chr(97 + k)};" * 10 + '">' for k in range(8)) + "]><annotation>&i;</annotation>"  # fmt: skip
    annotation("entities", laughs)
    expected["entities"] = "entities.xml: unreadable XML"
    annotation("no_filename", xml("").replace("<filename></filename>", ""))
    expected["no_filename"] = "no_filename.xml: no <filename>"
    annotation("non_numeric", xml("shapes_0001.jpg").replace("<xmin>20</xmin>", "<xmin>abc</xmin>"))
    expected["non_numeric"] = "non_numeric.xml: object 'ellipse' has no valid <bndbox>"
    annotation("nan_box", xml("shapes_0001.jpg").replace("<xmin>20</xmin>", "<xmin>nan</xmin>"))
    expected["nan_box"] = "nan_box.xml: object 'ellipse' has the box [nan"
    annotation("negative", xml("shapes_0002.jpg", objects=[("ellipse", (-5, 20, 60, 70))]))
    expected["negative"] = "reached outside their image and were clipped"
    annotation("inverted", xml("shapes_0002.jpg", objects=[("ellipse", (60, 70, 20, 20))]))
    expected["inverted"] = "1 boxes had their corners swapped"
    annotation("zero_area", xml("shapes_0003.jpg", objects=[("ellipse", (200, 200, 300, 300)), ("ellipse", BOX)]))
    expected["zero_area"] = "boxes of zero area were dropped"
    annotation("labels", xml("shapes_0003.jpg", objects=[("dog", BOX), ("Ellipse", BOX), ("ellipse", BOX)]))
    expected["labels"] = "not in `labels`, ignored: dog (1), Ellipse (1)"
    crowd = [("rectangle", (1 + 6 * (k % 20), 1 + 12 * (k // 20), 5 + 6 * (k % 20), 10 + 12 * (k // 20)))
             for k in range(200)]  # fmt: skip
    annotation("crowd", xml("shapes_0004.jpg", objects=crowd))
    expected["crowd"] = None  # training notes images with more than max_box_per_image objects
    annotation("missing_image", xml("absent.jpg"))
    expected["missing_image"] = "missing_image.xml: image absent.jpg not found"
    image_file("orphan.jpg", good)
    expected["orphan"] = "images in the image folder have no annotation"
    annotation("duplicates", xml("shapes_0005.jpg", objects=[("ellipse", BOX), ("ellipse", BOX)]))
    expected["duplicates"] = "1 duplicate objects"
    annotation("elsewhere", xml("/somewhere/else/shapes_0005.jpg"))
    expected["elsewhere"] = "1 <filename>s held folders"
    image_file("resized.jpg", jpeg_bytes(shapes_image((64, 64))))
    annotation("resized", xml("resized.jpg"))
    expected["resized"] = "resized.jpg: <size> 128x128, the image 64x64: boxes scaled"
    rotated = Image.fromarray(shapes_image((96, 128)))
    exif = rotated.getexif()
    exif[0x0112] = 6
    rotated.save(os.path.join(images, "rotated.jpg"), exif=exif.tobytes())
    annotation("rotated", xml("rotated.jpg", objects=[("ellipse", (5, 5, 40, 30))], width=128, height=96))
    expected["rotated"] = "rotated.jpg: EXIF orientation 6: boxes turned"
    os.mkfifo(os.path.join(images, "fifo.jpg"))
    annotation("fifo", xml("fifo.jpg"))
    expected["fifo"] = "fifo.jpg is not a regular file"
    image_file("a b ü.jpg", good)
    annotation("spaces", xml("a b ü.jpg"))
    expected["spaces"] = None
    image_file(os.fsdecode(b"k\xe4nguru.jpg"), good)  # a Latin-1 name: no UTF-8 XML can name it
    return expected
