"""Your own images: a folder of image files plus a CSV naming each file's label and attributes.

``labels.csv`` needs the columns ``path`` (relative to the folder) and ``label``. An optional column
``split`` (train, val or test per image) keeps the dataset's own split: a published test set stays the
test set (without val rows, a seeded ``val_fraction`` of the train rows validates); without it the split
is random (``test_fraction``, then ``val_fraction`` of the rest, seeded by ``split_seed``). The other
columns are categorical attributes, each a partition (``partition.by=[<column>]``): those that
``dataset.attributes`` names, or every one when it names none, so that a bookkeeping column is never
audited as a group once the attributes are named.

The CSV is input we do not control: every path must stay inside the folder once symlinks are
resolved (an audit must never read, or write into ``dataset.json`` the name of, a file elsewhere),
and a duplicate row, an empty label or an empty attribute value is an error naming its lines,
since each would silently change the split or invent a group. A CSV of one label is refused before
any image is decoded: one class has no boundary to measure a distance to.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..config.data import ImageFolderData
from ..config.rules import check_values
from .base import DataError, ImageDataModule, existing_root
from .sampling import split_official
from .files import FileImages, codes_of, missing_files

log = logging.getLogger(__name__)

SHOWN = 5   # lines named per problem; the count says how many there are
RESERVED = ("path", "label", "split")   # every other column is an attribute
SPLITS = ("train", "val", "test")


def lines_of(rows) -> str:
    """Row indices of the table as the CSV's line numbers (the header is line 1)."""
    lines = [str(row + 2) for row in rows]
    return ", ".join(lines[:SHOWN]) + (f" … ({len(lines)} in all)" if len(lines) > SHOWN else "")


def read_labels(csv_path: Path) -> pd.DataFrame:
    """The CSV as text cells (empty ones as ""), indexed so that row r is line r + 2, without its blank
    lines; anything pandas cannot read, and a line with more cells than the header, becomes a one-line
    :class:`DataError` (read with a header, pandas would drop such cells or shift the columns)."""
    try:
        cells = pd.read_csv(csv_path, header=None, dtype=str, keep_default_na=False, skip_blank_lines=False,
                            index_col=False, encoding="utf-8-sig").fillna("")
    except pd.errors.EmptyDataError:
        raise DataError(f"{csv_path} is empty. Fix: write a header path,label[,attributes...] and a line per image") \
            from None
    except UnicodeDecodeError as error:
        raise DataError(f"{csv_path} is not UTF-8 text (byte {error.object[error.start]:#x} at offset {error.start}). "
                        "Fix: save it as UTF-8") from None
    except pd.errors.ParserError as error:
        reason = str(error).strip().splitlines()[0]
        raise DataError(f"{csv_path} is not a well-formed CSV ({reason}). Fix: give every line as many "
                        "comma-separated cells as the header, quoting cells that hold commas") from None
    header = [str(name).strip() for name in cells.iloc[0]]
    if "" in header or len(set(header)) < len(header):
        raise DataError(f"{csv_path}: its header {header} has an empty or repeated column name. Fix: name each "
                        "column once")
    table = cells.iloc[1:].set_axis(header, axis=1).reset_index(drop=True)
    missing_columns = {"path", "label"} - set(table.columns)
    if missing_columns:
        raise DataError(f"{csv_path} lacks the column(s) {sorted(missing_columns)}; "
                        f"it has {list(table.columns)}. Fix: add path and label columns")
    table = table[table.ne("").any(axis=1)]   # blank lines
    if table.empty:
        raise DataError(f"{csv_path} has a header but no images. Fix: add a line path,label,... per image")
    return table


def check_cells(table: pd.DataFrame, csv_path: Path) -> None:
    """Every image needs a path, a label and a value for each attribute: an empty cell would become a
    class or group of its own."""
    empty = {column: lines_of(table.index[table[column].str.strip() == ""]) for column in table.columns}
    empty = {column: lines for column, lines in empty.items() if lines}
    if empty:
        where = "; ".join(f"{column} on line(s) {lines}" for column, lines in empty.items())
        raise DataError(f"{csv_path} has empty cells: {where}. Fix: fill them in, or remove those lines "
                        "(a missing value is not a group)")


def check_classes(table: pd.DataFrame, csv_path: Path) -> None:
    """Two labels at least: a classifier of one class has no decision boundary, so no distance to measure;
    refused here, before any image is decoded, instead of an estimator failing after the whole training."""
    labels = table["label"].unique()
    if len(labels) < 2:
        raise DataError(f"{csv_path}: every image has the label {labels[0]!r}, and a classifier of one class has no "
                        "boundary to measure a distance to. Fix: add images of at least one other class to the CSV")


def confined_paths(table: pd.DataFrame, root: Path, csv_path: Path) -> list[Path]:
    """Each row's image file, resolved; an error names the lines whose path leads outside ``root``
    (absolute, ``..``, or a symlink to elsewhere) and the lines that name one file twice."""
    inside = root.resolve()
    paths = [(root / path).resolve() for path in table["path"]]
    outside = [row for row, path, given in zip(table.index, paths, table["path"])
               if Path(given).is_absolute() or not path.is_relative_to(inside)]
    if outside:
        examples = ", ".join(repr(table.at[row, "path"]) for row in outside[:SHOWN])
        raise DataError(f"{csv_path} names files outside dataset.root={root} on line(s) {lines_of(outside)}: "
                        f"{examples}. Fix: give paths relative to that folder, inside it (no .., no absolute "
                        "paths, no symlinks that lead out)")
    repeated = pd.Series(paths, index=table.index).duplicated(keep=False)
    if repeated.any():
        examples = sorted({table.at[row, "path"] for row in table.index[repeated]})[:SHOWN]
        raise DataError(f"{csv_path} lists the same image more than once, on line(s) {lines_of(table.index[repeated])}"
                        f" ({', '.join(examples)}): it could land in training and in the test set. Fix: keep one "
                        "line per image")
    return paths


def audited_columns(table: pd.DataFrame, named: list[str] | None, csv_path: Path) -> list[str]:
    """The attribute columns: those ``dataset.attributes`` names (each must exist), or all but path, label
    and split when it names none; the columns left out are named in the log."""
    extra = [column for column in table.columns if column not in RESERVED]
    if named is None:
        return extra
    named = [str(column) for column in named]
    unknown = [column for column in named if column not in extra]
    if unknown:
        reserved = [column for column in unknown if column in RESERVED]
        why = f" ({', '.join(reserved)} cannot be an attribute)" if reserved else ""
        raise DataError(f"dataset.attributes names {unknown}{why}, but the attribute columns of {csv_path} are "
                        f"{extra}. Fix: pass dataset.attributes=[{','.join(c for c in named if c in extra)}] or "
                        "add the column(s)")
    ignored = [column for column in extra if column not in named]
    if ignored:
        log.info("%s: column(s) %s not audited (dataset.attributes=[%s])", csv_path.name, ", ".join(ignored),
                 ",".join(named))
    return named


def split_of(table: pd.DataFrame, csv_path: Path) -> np.ndarray | None:
    """The ``split`` column as train/val/test per row (case and spaces ignored), or None without one; an
    error names the lines with any other value, and a split with no train or no test row."""
    if "split" not in table.columns:
        return None
    split = table["split"].str.strip().str.lower().to_numpy(dtype=object)
    wrong = np.flatnonzero(~np.isin(split, SPLITS))
    if wrong.size:
        values = sorted({str(table["split"].iloc[row]) for row in wrong})[:SHOWN]
        raise DataError(f"{csv_path}: the split column holds {values} on line(s) {lines_of(table.index[wrong])}. "
                        "Fix: write train, val or test there (or drop the column for a random split)")
    missing = [name for name in ("train", "test") if name not in split]
    if missing:
        raise DataError(f"{csv_path}: the split column has no {' and no '.join(missing)} row. Fix: mark the images "
                        "to train on as train and those to audit as test (val is optional)")
    return split


class ImageFolderDataModule(ImageDataModule):
    """Images listed in ``<root>/<csv>``; rows sorted by path so the split ignores file-system order."""

    def __init__(self, root: str | None = None, csv: str = ImageFolderData.csv, channels: int = ImageFolderData.channels,
                 image_size: int | None = ImageFolderData.image_size, cache: bool = ImageFolderData.cache,
                 attributes: list[str] | None = ImageFolderData.attributes, **kwargs):
        super().__init__(**kwargs)
        check_values(ImageFolderData, "dataset", channels=channels, image_size=image_size, cache=cache)
        self.attributes = None if attributes is None else list(attributes)
        self.assigned: np.ndarray | None = None   # the CSV's split per (sorted) row, when it has one
        self.root = existing_root(root, "dataset.root", f"It must be the folder that holds your images and {csv}. "
                                  "Fix: pass dataset.root=/path/to/folder")
        self.csv_path = self.root / csv
        if not self.csv_path.is_file():
            raise DataError(f"dataset.csv={csv}: {self.csv_path} does not exist. Fix: put a CSV with columns "
                            "path,label[,attributes...] there, or name it with dataset.csv=FILE")
        self.channels, self.image_size, self.cache = channels, image_size, cache

    def load(self) -> FileImages:
        table = read_labels(self.csv_path)
        columns = audited_columns(table, self.attributes, self.csv_path)
        table = table[[c for c in RESERVED if c in table.columns] + columns]   # an ignored column may have gaps
        check_cells(table, self.csv_path)
        check_classes(table, self.csv_path)
        paths = confined_paths(table, self.root, self.csv_path)
        split = split_of(table, self.csv_path)
        order = np.argsort(table["path"].to_numpy(), kind="stable")
        table, paths = table.iloc[order].reset_index(drop=True), [paths[i] for i in order]
        self.assigned = None if split is None else split[order]
        self.facts["split_from"] = "the CSV's split column" if split is not None else \
            f"random: test_fraction={self.test_fraction}, val_fraction={self.val_fraction}, split_seed={self.split_seed}"
        missing_files(paths, str(self.csv_path))
        labels, class_names = codes_of(table["label"])
        attributes, categories = {}, {}
        for column in columns:
            attributes[column], categories[column] = codes_of(table[column])
        return FileImages(paths, labels, class_names, attributes, categories, self.channels, self.image_size,
                          self.cache, max_pixels=self.max_image_pixels)

    def split(self, table: FileImages) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The CSV's own split when it has a split column (its val rows, or else a seeded ``val_fraction`` of
        its train rows, validate); otherwise the seeded random split."""
        if self.assigned is None:
            return super().split(table)
        if "val" not in self.assigned:
            return split_official(self.assigned == "test", self.val_fraction, self.split_seed)
        return tuple(np.flatnonzero(self.assigned == name) for name in SPLITS)
