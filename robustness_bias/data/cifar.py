"""CIFAR-10, CIFAR-100 and CIFAR-100 super-classes, read from torchvision's on-disk layout.

The official archives unpack into ``<root>/cifar-10-batches-py/`` and ``<root>/cifar-100-python/``:
Python pickles whose ``data`` rows hold 3,072 bytes (the 32×32 red plane, then green, then blue).
The official test set is the test split; a seeded ``val_fraction`` of the training set validates.
Files are checked when the module is built, so a wrong ``dataset.root`` fails before any training.
A pickle may call any function while it is read, so the batches are read by :class:`BatchUnpickler`,
which builds numpy arrays and nothing else (docs/design.md, "Untrusted files and bad input").
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchvision.transforms.functional import InterpolationMode, resize

from ..config.data import CifarData
from ..config.rules import check_values
from .base import DataError, ImageDataModule, ImageTable, existing_root

_PIXELS_PER_IMAGE = 3 * 32 * 32


@dataclass(frozen=True)
class Archive:
    """Where one official CIFAR archive comes from and which files it unpacks to."""

    title: str
    url: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    torchvision_dataset: str   # the torchvision.datasets class that can download it

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train_files, *self.test_files, self.meta_file)


CIFAR10_ARCHIVE = Archive(
    "CIFAR-10", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "cifar-10-batches-py",
    tuple(f"data_batch_{k}" for k in range(1, 6)), ("test_batch",), "batches.meta", "CIFAR10")
CIFAR100_ARCHIVE = Archive(
    "CIFAR-100", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "cifar-100-python",
    ("train",), ("test",), "meta", "CIFAR100")


class CIFARImages(ImageTable):
    """CIFAR pixels kept as uint8 (184 MB for 60,000 images, not 737 MB as floats), scaled per image."""

    def __init__(self, pixels: torch.Tensor, is_test: np.ndarray, image_size: int | None, labels, class_names,
                 attributes=None, categories=None):
        super().__init__(labels, class_names, attributes, categories, is_test)
        self.pixels, self.image_size = pixels, image_size

    def image_digest(self) -> str:
        return hashlib.sha256(self.pixels.numpy().tobytes()).hexdigest() + f"@{self.image_size}"

    def image(self, index: int) -> torch.Tensor:
        image = self.pixels[index].float() / 255.0
        if self.image_size:
            image = resize(image, [self.image_size, self.image_size], InterpolationMode.BILINEAR, antialias=True)
        return image


def _numpy_reconstruct():
    """numpy's array rebuilder: ``numpy._core`` since numpy 2, ``numpy.core`` before (and in CIFAR's files)."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:   # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


# What a CIFAR batch may name: numpy's array pieces, and the byte-string codec Python 3 pickles with protocol 2.
_BATCH_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: __import__("codecs").encode,
}


class NotABatch(pickle.UnpicklingError):
    """A pickle named a function or class that a CIFAR batch never holds; nothing of it ran."""


class BatchUnpickler(pickle.Unpickler):
    """Unpickles dictionaries, lists, numbers, strings and numpy arrays only.

    ``pickle.load`` calls whatever function the file names (``os.system`` included), so a crafted
    ``cifar-10-batches-py/`` could run code; real batch files name only numpy's array pieces.
    """

    def find_class(self, module: str, name: str) -> Any:
        found = _BATCH_GLOBALS.get((module, name))
        if found is None:
            raise NotABatch(f"{module}.{name}")
        return found()


def _as_text(value: Any) -> Any:
    """Pickles written by Python 2 may hold byte strings; names and keys are read as text."""
    return value.decode("latin1") if isinstance(value, bytes) else value


class CIFARDataModule(ImageDataModule):
    """What the CIFAR variants share: finding, downloading and reading the pickles; the test batches are the test set."""

    archive: Archive
    label_keys: tuple[str, ...]   # the per-image label lists to read from every data file

    def __init__(self, root: str | None = None, download: bool = CifarData.download,
                 image_size: int | None = CifarData.image_size, batch_size: int = CifarData.batch_size,
                 eval_batch_size: int = CifarData.eval_batch_size, **kwargs):
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size, **kwargs)
        check_values(CifarData, "dataset", download=download, image_size=image_size)
        # root need not exist yet (dataset.download=true makes it); _missing_message explains a wrong one
        self.root = existing_root(root, "dataset.root", f"It must be the folder that holds {self.archive.folder}/. "
                                  "Fix: pass dataset.root=/path/to/that/folder", must_exist=False).resolve()
        self.folder = self.root / self.archive.folder
        self.image_size = image_size
        if self._missing_files() and download:
            self._download()
        missing = self._missing_files()
        if missing:
            raise DataError(self._missing_message(missing))

    def _missing_files(self) -> list[str]:
        return [name for name in self.archive.files if not (self.folder / name).is_file()]

    def _missing_message(self, missing: list[str]) -> str:
        archive = self.archive
        found = (f"{self.folder}/ lacks {', '.join(missing)}" if self.folder.is_dir()
                 else f"{self.folder}/ does not exist")
        return (f"{archive.title} not found under dataset.root={self.root}: {found}. "
                f"Fix: download {archive.url} and unpack it into {self.root} "
                f"(tar -xzf {archive.url.rsplit('/', 1)[-1]} -C {self.root}) so that {self.folder}/ holds "
                f"{', '.join(archive.files)}; or pass dataset.root=/path for a folder that holds "
                f"{archive.folder}/; or pass dataset.download=true to fetch it when online")

    def _download(self) -> None:
        import torchvision.datasets

        dataset = getattr(torchvision.datasets, self.archive.torchvision_dataset)
        try:
            dataset(str(self.root), train=False, download=True)   # fetches and unpacks the whole archive
        except Exception as error:   # no network, a proxy, a bad checksum, a full disk: all end the same way
            raise DataError(f"dataset.download=true: fetching {self.archive.url} into {self.root} failed "
                            f"({type(error).__name__}: {error}). "
                            + self._missing_message(self._missing_files())) from error

    def _read(self, name: str) -> dict[str, Any]:
        path = self.folder / name
        try:
            with open(path, "rb") as file:
                content = BatchUnpickler(file, encoding="latin1").load()
        except NotABatch as refused:
            raise DataError(f"{path} is not a {self.archive.title} batch file: it asks to call {refused}, which no "
                            f"batch holds; refused, nothing in it ran. Fix: delete {self.folder}/ and unpack "
                            f"{self.archive.url} again") from None
        except Exception as error:   # a damaged pickle can fail in many ways; each means the same thing
            raise DataError(f"{path} cannot be read ({type(error).__name__}: {error}): the file is truncated or "
                            f"corrupt. Fix: delete {self.folder}/ and unpack {self.archive.url} again") from error
        if not isinstance(content, dict):
            raise DataError(f"{path} holds a {type(content).__name__}, not a {self.archive.title} dictionary. "
                            f"Fix: delete {self.folder}/ and unpack {self.archive.url} again")
        return {_as_text(key): value for key, value in content.items()}

    def _field(self, content: dict[str, Any], key: str, name: str) -> Any:
        if key not in content:
            raise DataError(f"{self.folder / name} has no '{key}' entry (it has {sorted(content)}), so it is not "
                            f"the {self.archive.title} file. Fix: delete {self.folder}/ and unpack "
                            f"{self.archive.url} again")
        return content[key]

    def _read_images(self, names: tuple[str, ...]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The pixel rows and label lists of these data files, concatenated in order."""
        rows, labels = [], {key: [] for key in self.label_keys}
        for name in names:
            content = self._read(name)
            data = np.asarray(self._field(content, "data", name))
            if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _PIXELS_PER_IMAGE:
                raise DataError(f"{self.folder / name}: 'data' is {data.dtype} of shape {data.shape}, expected "
                                f"uint8 rows of {_PIXELS_PER_IMAGE}. Fix: unpack {self.archive.url} again")
            rows.append(data)
            for key in self.label_keys:
                values = np.asarray(self._field(content, key, name), dtype=np.int64)
                if values.shape != (len(data),):
                    raise DataError(f"{self.folder / name}: {len(data)} images but {values.size} '{key}'. "
                                    f"Fix: unpack {self.archive.url} again")
                labels[key].append(values)
        return np.concatenate(rows), {key: np.concatenate(parts) for key, parts in labels.items()}

    def _names(self, meta: dict[str, Any], key: str) -> list[str]:
        return [str(_as_text(name)) for name in self._field(meta, key, self.archive.meta_file)]

    def load(self) -> CIFARImages:
        train_rows, train_labels = self._read_images(self.archive.train_files)
        test_rows, test_labels = self._read_images(self.archive.test_files)
        pixels = torch.from_numpy(np.concatenate([train_rows, test_rows])).view(-1, 3, 32, 32)
        labels = {key: np.concatenate([train_labels[key], test_labels[key]]) for key in self.label_keys}
        is_test = np.repeat([False, True], [len(train_rows), len(test_rows)])
        self.facts.update(source=str(self.folder), images_read={"train": len(train_rows), "test": len(test_rows)})
        return self.build_table(pixels, is_test, labels, self._read(self.archive.meta_file))

    def build_table(self, pixels: torch.Tensor, is_test: np.ndarray, labels: dict[str, np.ndarray],
              meta: dict[str, Any]) -> CIFARImages:
        """Which label is the class and which become attributes."""
        raise NotImplementedError


class CIFAR10DataModule(CIFARDataModule):
    """CIFAR-10: 50,000 training and 10,000 test images in 10 classes; no attributes beyond the class."""

    archive = CIFAR10_ARCHIVE
    label_keys = ("labels",)

    def build_table(self, pixels, is_test, labels, meta) -> CIFARImages:
        return CIFARImages(pixels, is_test, self.image_size, labels["labels"], self._names(meta, "label_names"))


class CIFAR100DataModule(CIFARDataModule):
    """CIFAR-100's 100 fine classes; the official 20 super-classes form the attribute ``superclass``."""

    archive = CIFAR100_ARCHIVE
    label_keys = ("fine_labels", "coarse_labels")

    def build_table(self, pixels, is_test, labels, meta) -> CIFARImages:
        return CIFARImages(pixels, is_test, self.image_size, labels["fine_labels"],
                           self._names(meta, "fine_label_names"),
                           attributes={"superclass": labels["coarse_labels"]},
                           categories={"superclass": self._names(meta, "coarse_label_names")})


class CIFAR100SuperDataModule(CIFAR100DataModule):
    """CIFAR-100 classified into its 20 official super-classes; the fine class is the attribute ``fine_class``."""

    def build_table(self, pixels, is_test, labels, meta) -> CIFARImages:
        return CIFARImages(pixels, is_test, self.image_size, labels["coarse_labels"],
                           self._names(meta, "coarse_label_names"),
                           attributes={"fine_class": labels["fine_labels"]},
                           categories={"fine_class": self._names(meta, "fine_label_names")})
