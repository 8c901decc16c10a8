"""Images stored as files: decoded on demand, or all at once into memory with ``cache``."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms.functional import pil_to_tensor, resize

from ..console import progress_bar
from ..config.data import FileData, ImageFolderData
from ..config.rules import rule_of
from .base import DataError, ImageTable

MODES = {1: "L", 3: "RGB"}
_LAST_PASS: dict = {}   # the last decoding pass: its key (FileImages._pass_key) and outcome
READ_ERRORS = (OSError, SyntaxError)    # what PIL raises for empty, truncated or garbled files


def missing_files(paths: list[Path], listed_in: str) -> None:
    """Fail, naming a few examples, when listed image files do not exist."""
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"{len(missing)} image(s) listed in {listed_in} do not exist, e.g. {missing[:3]}. "
                        "Fix: correct the paths or the dataset.root setting")


class FileImages(ImageTable):
    """Image files converted to ``channels`` and optionally resized to ``image_size``².

    :meth:`unreadable` decodes every image once, so that a broken file is found before training.
    With ``cache`` that pass keeps the pixels in one uint8 tensor, so that epochs never touch the
    disk or the JPEG decoder.
    """

    def __init__(self, paths: list[Path], labels, class_names, attributes=None, categories=None, channels: int = 3,
                 image_size: int | None = None, cache: bool = False, is_test=None,
                 max_pixels: int = FileData.max_image_pixels):
        super().__init__(labels, class_names, attributes, categories, is_test)
        rule_of(ImageFolderData, "channels").check("dataset.channels", channels)   # the schema's rules
        rule_of(FileData, "image_size").check("dataset.image_size", image_size)
        self.paths, self.mode, self.image_size, self.cache = list(paths), MODES[channels], image_size, cache
        self.max_pixels = max_pixels
        self._decoded: torch.Tensor | None = None
        self._unreadable: dict[int, str] | None = None
        self._first: int | None = None         # the first readable image, whose shape every other must have
        self._shape: tuple[int, ...] | None = None

    def source(self, index: int) -> str:
        return str(self.paths[index])

    def image_digest(self) -> str:
        """The files' names below the folder that holds them all, and their sizes (reading every byte
        would double the decoding pass), with the size and channels they are converted to."""
        top = os.path.commonpath([str(path.parent) for path in self.paths]) if self.paths else ""
        hashed = hashlib.sha256(f"{self.mode}@{self.image_size}".encode())
        for path in self.paths:
            hashed.update(f"{os.path.relpath(path, top)}\0{path.stat().st_size}\n".encode())
        return hashed.hexdigest()

    def _open(self, index: int) -> Image.Image:
        """Image ``index`` decoded in full; raises one of ``READ_ERRORS`` for a broken file.

        A file's header states its size before any pixel is decoded, and a 140 kB PNG may state
        12000×12000 (3.7 GB once decoded): such a file is refused before decoding. PIL's own
        ``Image.MAX_IMAGE_PIXELS`` is a process-wide threshold, so the budget is checked here.
        """
        try:
            with Image.open(self.paths[index]) as img:
                self._check_budget(index, img.size)
                return img.convert(self.mode)   # convert loads every pixel: a truncated file fails here
        except Image.DecompressionBombError as error:   # beyond PIL's own limit, which it checks on opening
            raise DataError(f"{self.paths[index]}: {error} Fix: remove or replace the file") from None

    def _check_budget(self, index: int, size: tuple[int, int]) -> None:
        width, height = size
        if width * height > self.max_pixels:
            raise DataError(f"{self.paths[index]} is {width}×{height} = {width * height:,} pixels, over "
                            f"dataset.max_image_pixels={self.max_pixels} (a decompression bomb?). Fix: remove the "
                            f"file, or if it is a real image pass dataset.max_image_pixels={width * height}")

    def _pixels(self, img: Image.Image) -> torch.Tensor:
        pixels = pil_to_tensor(img)
        if self.image_size is None:
            return pixels
        return resize(pixels, [self.image_size, self.image_size], antialias=True)

    def decode(self, index: int) -> torch.Tensor:
        """uint8 (C, H, W) pixels of image ``index``."""
        try:
            img = self._open(index)
        except READ_ERRORS as error:
            raise DataError(f"cannot decode image {self.paths[index]}: {error}. "
                            "Fix: remove or replace the file") from error
        return self._pixels(img)

    def image(self, index: int) -> torch.Tensor:
        if not self.cache:
            return self.decode(index).float() / 255.0
        reason = self.unreadable().get(index)
        if reason is not None:
            raise DataError(f"cannot decode image {self.paths[index]}: {reason}. Fix: remove or replace the file")
        return self._decoded[index].float() / 255.0

    def unreadable(self) -> dict[int, str]:
        """Index → reason for every image that cannot be decoded, found by decoding each once (in
        threads: PIL releases the GIL); with ``cache`` the pixels of this pass are kept.

        The pass's outcome is also kept for the next table of the same files (names, sizes and
        modification times) converted the same way: Hydra runs a sweep's jobs one after another in one
        process, so a sweep decodes its images once, not once per job."""
        if self._unreadable is None:
            key = self._pass_key()
            if _LAST_PASS.get("key") != key:
                _LAST_PASS.clear()   # one pass kept at a time: large images' pixels take gigabytes
                reasons = self._decode_all()
                _LAST_PASS.update(key=key, outcome=(reasons, self._decoded, self._first, self._shape))
            self._unreadable, self._decoded, self._first, self._shape = _LAST_PASS["outcome"]
        return self._unreadable

    def _pass_key(self) -> tuple:
        """What the decoding pass's outcome depends on: the files as they are now and how they are converted."""
        return tuple(map(file_state, self.paths)), self.mode, self.image_size, self.cache, self.max_pixels


    def _attempt(self, index: int) -> str | tuple[tuple[int, ...], torch.Tensor | None]:
        """Why image ``index`` cannot be decoded; else the (C, H, W) shape it decodes to and, when
        caching, its pixels."""
        try:
            img = self._open(index)
        except UnidentifiedImageError:      # its message repeats the path
            return "UnidentifiedImageError: cannot identify image file (empty, garbled or not an image)"
        except READ_ERRORS as error:
            return f"{type(error).__name__}: {error}"
        if self.cache:
            pixels = self._pixels(img)
            return tuple(pixels.shape), pixels
        side = (img.height, img.width) if self.image_size is None else (self.image_size, self.image_size)
        return (len(img.getbands()), *side), None

    def _decode_all(self) -> dict[int, str]:
        reasons: dict[int, str] = {}
        pool = ThreadPoolExecutor()
        try:
            attempts = pool.map(self._attempt, range(len(self)))
            for index, result in enumerate(progress_bar(attempts, desc="decoding images", unit="img", total=len(self))):
                if isinstance(result, str):
                    reasons[index] = result
                else:
                    shape, pixels = result
                    self._check_shape(index, shape)
                    if pixels is not None:
                        self._keep(index, pixels)
        finally:
            pool.shutdown(cancel_futures=True)      # after an error, do not decode the rest
        return reasons

    def _check_shape(self, index: int, shape: tuple[int, ...]) -> None:
        """The first readable image fixes the shape every other must have: batches need one shape, and
        an image of another found only when the audit batches it would end a run after its training."""
        if self._first is None:
            self._first, self._shape = index, shape
        elif shape != self._shape:
            raise DataError(f"{self.paths[index]} is {shape} (channels, height, width) but "
                            f"{self.paths[self._first]} is {self._shape}: the images differ in size. "
                            "Fix: set dataset.image_size=N to resize them all to N×N")

    def _keep(self, index: int, pixels: torch.Tensor) -> None:
        if self._decoded is None:
            self._decoded = torch.zeros(len(self), *pixels.shape, dtype=torch.uint8)
        self._decoded[index] = pixels


def codes_of(values) -> tuple[np.ndarray, list[str]]:
    """Integer codes and sorted category names of a column of values."""
    categories = sorted({str(v) for v in values})
    lookup = {c: i for i, c in enumerate(categories)}
    return np.array([lookup[str(v)] for v in values], dtype=np.int64), categories


def file_state(path: Path) -> tuple:
    """A file's path, size and modification time (None for both where it cannot be read: the pass says why)."""
    try:
        stat = path.stat()
    except OSError:
        return str(path), None, None
    return str(path), stat.st_size, stat.st_mtime_ns
