"""UTKFace (Zhang, Song, Qi 2017): aligned and cropped 200×200 faces, labels in the file names.

File names read ``<age>_<gender>_<race>_<datetime>.jpg.chip.jpg`` with gender 0 male, 1 female and
race 0 white, 1 black, 2 asian, 3 indian, 4 other. The task is age in five bins, as in the paper; gender
and race are the sensitive attributes.

The distribution has defects that a loader must handle: names lacking a field (skipped
and counted), and byte-identical images, often under conflicting labels. Identical files are
collapsed to one; groups whose labels disagree are dropped or keep their first file (by name),
as configured. Files that cannot be decoded are left out and listed (``dataset.on_bad_file``). All
counts go into the run's ``dataset.json``.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..config.data import UTKFaceData
from ..config.rules import check_values
from .base import DataError, ImageDataModule, existing_root
from .sampling import split_indices
from .files import FileImages

log = logging.getLogger(__name__)

# The label fields are what matters: two distributed names have a stray space or a missing dot
# after the date, and are kept; three lack the race field, and are skipped.
NAME = re.compile(r"^(\d+)_([01])_([0-4])_\d+")
AGE_BINS = [(0, 14), (15, 24), (25, 39), (40, 59), (60, 200)]
AGE_NAMES = ["0-14", "15-24", "25-39", "40-59", "60+"]
GENDERS = ["male", "female"]
RACES = ["white", "black", "asian", "indian", "other"]


def age_bin(age: int) -> int:
    return next(i for i, (low, high) in enumerate(AGE_BINS) if low <= age <= high)


def parse_name(name: str) -> tuple[int, int, int] | None:
    """(age, gender, race) from a UTKFace file name, or None when a field is missing or malformed."""
    match = NAME.match(name)
    return (int(match.group(1)), int(match.group(2)), int(match.group(3))) if match else None


def content_key(index: int, path: Path) -> str:
    """The file's SHA-1. An empty or unreadable file is no copy of another: it keeps a key of its
    own, so that the decoding check names it as a bad file instead of it vanishing as a duplicate."""
    try:
        content = path.read_bytes()
    except OSError:
        content = b""
    return hashlib.sha1(content).hexdigest() if content else f"unreadable:{index}"


def deduplicate(paths: list[Path], labels: list[tuple], on_conflict: str) -> tuple[list[int], dict]:
    """Indices to keep after collapsing byte-identical files, and the counts of what was removed.

    ``paths`` must be in name order: a group keeps its first member, which is then its first file by name.
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for i, path in enumerate(paths):
        groups[content_key(i, path)].append(i)
    keep, duplicate_groups, conflicting, surplus, dropped = [], 0, 0, 0, 0
    for members in groups.values():
        if len(members) == 1:
            keep.append(members[0])
            continue
        duplicate_groups += 1
        surplus += len(members) - 1
        if len({labels[i] for i in members}) > 1:
            conflicting += 1
            if on_conflict == "drop":
                dropped += len(members)
                continue
        keep.append(members[0])     # members are in index order, hence in name order
    counts = {"duplicate_groups": duplicate_groups, "surplus_files": surplus,
              "conflicting_groups": conflicting, "dropped_for_conflicts": dropped}
    return sorted(keep), counts


class UTKFaceDataModule(ImageDataModule):
    """UTKFace with age bins as classes and gender and race as attributes; 80/20 split, seed 42."""

    label_name = "age"

    def __init__(self, root: str | None = None, image_size: int | None = UTKFaceData.image_size,
                 cache: bool = UTKFaceData.cache, deduplicate: bool = UTKFaceData.deduplicate,
                 on_conflict: str = UTKFaceData.on_conflict, **kwargs):
        super().__init__(**kwargs)
        check_values(UTKFaceData, "dataset", image_size=image_size, cache=cache, deduplicate=deduplicate,
                     on_conflict=on_conflict)
        self.root = existing_root(root, "dataset.root", "It must be the folder UTKFace/ unpacked from UTKFace.tar.gz "
                                  "(UTKFace's 'Aligned & Cropped Faces', 23,707 JPEGs). "
                                  "Fix: pass dataset.root=/path/to/UTKFace")
        self.image_size, self.cache = image_size, cache
        self.deduplicate, self.on_conflict = deduplicate, on_conflict

    def load(self) -> FileImages:
        files = sorted((p for p in self.root.iterdir() if p.suffix.lower() == ".jpg" and not p.name.startswith(".")),
                       key=lambda p: p.name)      # so that neither listing order nor platform changes anything
        parsed = [(p, parse_name(p.name)) for p in files]
        malformed = [p.name for p, fields in parsed if fields is None]
        if malformed:
            log.warning("UTKFace: skipped %d file(s) whose names lack a field, e.g. %s", len(malformed), malformed[:3])
        paths = [p for p, fields in parsed if fields is not None]
        labels = [fields for _, fields in parsed if fields is not None]
        if not paths:
            raise DataError(f"dataset.root={self.root}: no UTKFace images (<age>_<gender>_<race>_<date>.jpg.chip.jpg) "
                            "found there. Fix: point dataset.root at the unpacked UTKFace/ folder")
        self.facts.update(files=len(files), malformed_names=len(malformed), malformed_examples=malformed[:5])
        if self.deduplicate:
            keep, counts = deduplicate(paths, labels, self.on_conflict)
            self.facts.update(counts, on_conflict=self.on_conflict)
            paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
        ages, genders, races = (np.array(column) for column in zip(*labels))
        self.facts["after_cleaning"] = len(paths)
        # the test set: a seeded test_fraction of the files in name order (so listing order never matters)
        is_test = np.zeros(len(paths), dtype=bool)
        is_test[split_indices(len(paths), 0.0, self.test_fraction, self.split_seed)[2]] = True
        return FileImages(paths, [age_bin(a) for a in ages], AGE_NAMES,
                          attributes={"gender": genders, "race": races},
                          categories={"gender": GENDERS, "race": RACES},
                          channels=3, image_size=self.image_size, cache=self.cache, is_test=is_test,
                          max_pixels=self.max_image_pixels)
