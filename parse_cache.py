"""Parsed annotations kept between runs, so 100k annotation files are read once, not on every run.

<cache_dir>/parsed/<key>.json holds the instances and the ParseReport of one parse. The key is image_cache's
fingerprint of every file the parse reads (path, size, modification time) and of what it was asked (the labels,
the parser), so an edited, added or removed file gives a new parse instead of stale boxes.
"""

import dataclasses
import json
import os
from collections import Counter

from image_cache import fingerprint
from preprocessing import ParseReport
from weight_files import atomic_write

VERSION = 2  # bump when a parser's output changes


def cached_parse(cache_dir, files, settings, parse, report):
    """parse(report) -> instances, or the instances it gave last time for the same files and settings. Its
    report's counts are added to `report` either way."""
    if not cache_dir:
        return parse(report)
    path = os.path.join(cache_dir, "parsed", fingerprint(files, {"version": VERSION, **settings}) + ".json")
    try:
        with open(path) as f:
            stored = json.load(f)
        merge(
            report, ParseReport(**{**stored["report"], "unknown_labels": Counter(stored["report"]["unknown_labels"])})
        )
        return stored["instances"]
    except (OSError, ValueError, KeyError, TypeError):  # absent or unreadable: parse again
        pass
    fresh = ParseReport()
    instances = parse(fresh)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with atomic_write(path) as tmp, open(tmp, "w") as f:
            json.dump({"instances": instances,
                       "report": {f.name: getattr(fresh, f.name) for f in dataclasses.fields(fresh)}}, f)  # fmt: skip
    except OSError as e:  # the cache only saves time: a read-only or full cache_dir costs a parse next run
        print(f"Note: the parsed annotations are not cached ({os.path.dirname(path)}: {e.strerror or e}).")
    merge(report, fresh)
    return instances


def merge(report, other):
    for field in dataclasses.fields(ParseReport):
        mine, theirs = getattr(report, field.name), getattr(other, field.name)
        if isinstance(mine, Counter):
            mine.update(theirs)
        elif isinstance(mine, list):
            mine += [tuple(entry) for entry in theirs]
        else:
            setattr(report, field.name, mine + theirs)
