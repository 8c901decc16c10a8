"""Images stored as files: decoded on demand, or all at once into memory with ``cache``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor, resize
from tqdm.auto import tqdm

from .base import DataError, ImageTable

MODES = {1: "L", 3: "RGB"}


def check_channels(channels: int) -> None:
    if channels not in MODES:
        raise DataError(f"dataset.channels={channels}: use 1 (grey) or 3 (RGB)")


def missing_files(paths: list[Path], listed_in: str) -> None:
    """Fail, naming a few examples, when listed image files do not exist."""
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"{len(missing)} image(s) listed in {listed_in} do not exist, e.g. {missing[:3]}. "
                        "Fix: correct the paths or the dataset.root setting")


class FileImages(ImageTable):
    """Image files converted to ``channels`` and optionally resized to ``image_size``².

    With ``cache`` every image is decoded once, at first use, into one uint8 tensor, so that
    epochs after the first never touch the disk or the JPEG decoder.
    """

    def __init__(self, paths: list[Path], labels, class_names, attributes=None, categories=None, channels: int = 3,
                 image_size: int | None = None, cache: bool = False):
        super().__init__(labels, class_names, attributes, categories)
        check_channels(channels)
        self.paths, self.mode, self.image_size, self.cache = list(paths), MODES[channels], image_size, cache
        self._decoded: torch.Tensor | None = None

    def decode(self, index: int) -> torch.Tensor:
        """uint8 (C, H, W) pixels of image ``index``."""
        try:
            with Image.open(self.paths[index]) as img:
                pixels = pil_to_tensor(img.convert(self.mode))
        except OSError as error:
            raise DataError(f"cannot decode image {self.paths[index]}: {error}") from error
        if self.image_size:
            pixels = resize(pixels, [self.image_size, self.image_size], antialias=True)
        return pixels

    def image(self, index: int) -> torch.Tensor:
        if self.cache:
            if self._decoded is None:
                self._decoded = self._decode_all()
            return self._decoded[index].float() / 255.0
        return self.decode(index).float() / 255.0

    def _decode_all(self) -> torch.Tensor:
        first = self.decode(0)
        decoded = torch.empty(len(self), *first.shape, dtype=torch.uint8)
        decoded[0] = first
        for i in tqdm(range(1, len(self)), desc="decoding images", unit="img", initial=1, total=len(self)):
            pixels = self.decode(i)
            if pixels.shape != first.shape:
                raise DataError(f"{self.paths[i]} is {tuple(pixels.shape)} but {self.paths[0]} is "
                                f"{tuple(first.shape)}. Fix: set dataset.image_size to resize all images")
            decoded[i] = pixels
        return decoded


def codes_of(values) -> tuple[np.ndarray, list[str]]:
    """Integer codes and sorted category names of a column of values."""
    categories = sorted({str(v) for v in values})
    lookup = {c: i for i, c in enumerate(categories)}
    return np.array([lookup[str(v)] for v in values], dtype=np.int64), categories
