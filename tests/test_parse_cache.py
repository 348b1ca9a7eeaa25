"""Parsed annotations are kept between runs: a second load reads them back without parsing, and an edited file
or a broken cache file means parsing again."""

import datasets
from datasets import load_folders
from demo_data import write_split
from preprocessing import ParseReport


def test_a_second_load_reads_the_cache_and_reports_the_same(tmp_path, monkeypatch):
    write_split(str(tmp_path / "d"), 5, seed=1, size=(96, 96))
    (tmp_path / "d" / "annotations" / "broken.xml").write_text("<annotation>")
    images, annotations, cache = (
        str(tmp_path / "d" / "images"),
        str(tmp_path / "d" / "annotations"),
        str(tmp_path / "c"),
    )
    first_report, second_report = ParseReport(), ParseReport()
    first = load_folders(images, annotations, ["ellipse", "rectangle", "triangle"], first_report, cache)

    def no_parsing(*args, **kwargs):
        raise AssertionError("parsed again")

    monkeypatch.setattr(datasets, "parse_annotation", no_parsing)
    second = load_folders(images, annotations, ["ellipse", "rectangle", "triangle"], second_report, cache)
    assert second == first and len(first) == 5
    assert second_report == first_report and second_report.files == 6 and len(second_report.skipped_files) == 1
    monkeypatch.undo()
    other_labels = load_folders(images, annotations, ["ellipse"], ParseReport(), cache)  # other settings: parsed
    assert all(o["name"] == "ellipse" for i in other_labels for o in i["object"])


def test_an_edited_annotation_or_a_broken_cache_means_parsing_again(tmp_path):
    write_split(str(tmp_path / "d"), 3, seed=2, size=(96, 96))
    images, annotations, cache = (
        str(tmp_path / "d" / "images"),
        str(tmp_path / "d" / "annotations"),
        str(tmp_path / "c"),
    )
    labels = ["ellipse", "rectangle", "triangle"]
    before = load_folders(images, annotations, labels, ParseReport(), cache)
    xml = tmp_path / "d" / "annotations" / "shapes_0000.xml"
    text = xml.read_text()
    xml.write_text(text.replace("<xmin>", "<xmin>1", 1))  # a different first box, and a new modification time
    after = load_folders(images, annotations, labels, ParseReport(), cache)
    assert after[0]["object"][0]["xmin"] != before[0]["object"][0]["xmin"] and after[1:] == before[1:]
    for stored in (tmp_path / "c" / "parsed").iterdir():
        stored.write_text("{not json")
    assert load_folders(images, annotations, labels, ParseReport(), cache) == after
