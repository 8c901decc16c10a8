"""Your own images: a folder of image files plus a CSV naming each file's label and attributes.

``labels.csv`` needs the columns ``path`` (relative to the folder) and ``label``; every other
column is a categorical attribute and becomes a partition (``partition=<column>``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor, resize

from .base import DataError, ImageDataModule, ImageTable

_MODES = {1: "L", 3: "RGB"}


class FileImages(ImageTable):
    """Images decoded from disk on demand, converted to ``channels`` and optionally resized."""

    def __init__(self, paths: list[Path], labels, class_names, attributes, categories, channels: int,
                 image_size: int | None):
        super().__init__(labels, class_names, attributes, categories)
        self.paths, self.mode, self.image_size = paths, _MODES[channels], image_size

    def image(self, index: int) -> torch.Tensor:
        with Image.open(self.paths[index]) as img:
            pixels = pil_to_tensor(img.convert(self.mode)).float() / 255.0
        if self.image_size:
            pixels = resize(pixels, [self.image_size, self.image_size], antialias=True)
        return pixels


def _codes(column: pd.Series) -> tuple[np.ndarray, list[str]]:
    categorical = pd.Categorical(column.astype(str))
    return np.asarray(categorical.codes, dtype=np.int64), [str(c) for c in categorical.categories]


class ImageFolderDataModule(ImageDataModule):
    """Images listed in ``<root>/<csv>``; rows sorted by path so the split ignores file-system order."""

    def __init__(self, root: str | None = None, csv: str = "labels.csv", channels: int = 3,
                 image_size: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not root:
            raise DataError("dataset.root is not set. Fix: pass dataset.root=/path/to/folder "
                            "(the folder holding your images and labels.csv)")
        self.root = Path(root).expanduser()
        self.csv_path = self.root / csv
        if not self.root.is_dir():
            raise DataError(f"dataset.root={root}: no such folder. Fix: pass dataset.root=/path/to/folder "
                            "that holds your images and labels.csv")
        if not self.csv_path.is_file():
            raise DataError(f"dataset.csv={csv}: {self.csv_path} does not exist. Fix: put a CSV with columns "
                            "path,label[,attributes...] there, or name it with dataset.csv=FILE")
        if channels not in _MODES:
            raise DataError(f"dataset.channels={channels}: use 1 (grey) or 3 (RGB)")
        self.channels, self.image_size = channels, image_size

    def load(self) -> FileImages:
        table = pd.read_csv(self.csv_path)
        missing_columns = {"path", "label"} - set(table.columns)
        if missing_columns:
            raise DataError(f"{self.csv_path} lacks the column(s) {sorted(missing_columns)}; "
                            f"it has {list(table.columns)}. Fix: add path and label columns")
        table = table.sort_values("path", kind="stable").reset_index(drop=True)
        paths = [self.root / p for p in table["path"].astype(str)]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise DataError(f"{len(missing)} image(s) listed in {self.csv_path} do not exist, e.g. "
                            f"{missing[:3]}. Fix: correct the paths (relative to dataset.root)")
        labels, class_names = _codes(table["label"])
        attributes, categories = {}, {}
        for column in table.columns.drop(["path", "label"]):
            attributes[column], categories[column] = _codes(table[column])
        return FileImages(paths, labels, class_names, attributes, categories, self.channels, self.image_size)
