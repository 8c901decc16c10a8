"""Your own images: a folder of image files plus a CSV naming each file's label and attributes.

``labels.csv`` needs the columns ``path`` (relative to the folder) and ``label``; every other
column is a categorical attribute and becomes a partition (``partition=<column>``).
"""

from __future__ import annotations

import pandas as pd

from .base import DataError, ImageDataModule, existing_root
from .files import FileImages, check_channels, codes_of, missing_files


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
        table = pd.read_csv(self.csv_path)
        missing_columns = {"path", "label"} - set(table.columns)
        if missing_columns:
            raise DataError(f"{self.csv_path} lacks the column(s) {sorted(missing_columns)}; "
                            f"it has {list(table.columns)}. Fix: add path and label columns")
        table = table.sort_values("path", kind="stable").reset_index(drop=True)
        paths = [self.root / p for p in table["path"].astype(str)]
        missing_files(paths, str(self.csv_path))
        labels, class_names = codes_of(table["label"])
        attributes, categories = {}, {}
        for column in table.columns.drop(["path", "label"]):
            attributes[column], categories[column] = codes_of(table[column])
        return FileImages(paths, labels, class_names, attributes, categories, self.channels, self.image_size,
                          self.cache)
