"""Your own images: a folder of image files plus a CSV naming each file's label and attributes.

``labels.csv`` needs the columns ``path`` (relative to the folder) and ``label``; every other
column is a categorical attribute and becomes a partition (``partition=<column>``).

The CSV is input we do not control: every path must stay inside the folder once symlinks are
resolved (an audit must never read, or write into ``dataset.json`` the name of, a file elsewhere),
and a duplicate row, an empty label or an empty attribute value is an error naming its lines,
since each would silently change the split or invent a group.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .base import DataError, ImageDataModule, existing_root
from .files import FileImages, check_channels, codes_of, missing_files

SHOWN = 5   # lines named per problem; the count says how many there are


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


class ImageFolderDataModule(ImageDataModule):
    """Images listed in ``<root>/<csv>``; rows sorted by path so the split ignores file-system order."""

    def __init__(self, root: str | None = None, csv: str = "labels.csv", channels: int = 3,
                 image_size: int | None = None, cache: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.root = existing_root(root, "dataset.root", f"It must be the folder that holds your images and {csv}. "
                                  "Fix: pass dataset.root=/path/to/folder")
        self.csv_path = self.root / csv
        if not self.csv_path.is_file():
            raise DataError(f"dataset.csv={csv}: {self.csv_path} does not exist. Fix: put a CSV with columns "
                            "path,label[,attributes...] there, or name it with dataset.csv=FILE")
        check_channels(channels)
        self.channels, self.image_size, self.cache = channels, image_size, cache

    def load(self) -> FileImages:
        table = read_labels(self.csv_path)
        check_cells(table, self.csv_path)
        paths = confined_paths(table, self.root, self.csv_path)
        order = np.argsort(table["path"].to_numpy(), kind="stable")
        table, paths = table.iloc[order].reset_index(drop=True), [paths[i] for i in order]
        missing_files(paths, str(self.csv_path))
        labels, class_names = codes_of(table["label"])
        attributes, categories = {}, {}
        for column in table.columns.drop(["path", "label"]):
            attributes[column], categories[column] = codes_of(table[column])
        return FileImages(paths, labels, class_names, attributes, categories, self.channels, self.image_size,
                          self.cache)
