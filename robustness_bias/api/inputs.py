"""The Python API's inputs as the engine reads them: images (a tensor with labels, or a dataset), ids, and the
sensitive features as fairlearn takes them, each checked with a fix for what is wrong."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from ..records import INTERSECTION

# Record columns a sensitive feature may not be named after.
RESERVED = {"sample_index", "label", "class", "prediction", "correct", "estimator", "epoch", "epoch_tag", "precision",
            "distance", "bound", "cap", "success", "queries", "failure", "settings_hash", "weights_hash", "shard"}



class Source:
    """The user's images, read one at a time: a tensor with its labels, or a dataset of (image, label)."""

    def __init__(self, images, labels: np.ndarray, digest: str):
        self.images, self.labels, self.digest = images, labels, digest

    @classmethod
    def of(cls, X, y) -> Source:
        if isinstance(X, DataLoader):
            X = X.dataset
        if isinstance(X, Dataset) and not isinstance(X, torch.Tensor):
            if y is not None:
                raise ValueError("y is given and X is a dataset: the dataset's items already hold the labels")
            return cls._scanned(X)
        if y is None:
            raise ValueError("X is a tensor of images: pass their labels as y")
        images = torch.as_tensor(X).float()
        labels = _labels(y, len(images))
        _check_pixels(images, "X")
        digest = hashlib.sha256(images.detach().cpu().contiguous().numpy().tobytes())
        return cls(images, labels, digest.hexdigest())

    @classmethod
    def _scanned(cls, dataset: Dataset) -> Source:
        """Read every item once: the labels, the pixel range and a fingerprint of the images."""
        digest, labels = hashlib.sha256(), []
        for i in range(len(dataset)):
            image, label = _item(dataset, i)
            _check_pixels(image, f"image {i}")
            digest.update(image.cpu().contiguous().numpy().tobytes())
            labels.append(int(label))
        return cls(dataset, _labels(labels, len(labels)), digest.hexdigest())

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, position: int) -> torch.Tensor:
        if isinstance(self.images, torch.Tensor):
            return self.images[position]
        return _item(self.images, position)[0]


def _item(dataset: Dataset, i: int) -> tuple[torch.Tensor, object]:
    item = dataset[i]
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise ValueError(f"item {i} of the dataset is no (image, label, ...) pair")
    image = item[0]
    if not isinstance(image, (torch.Tensor, np.ndarray)):
        raise ValueError(f"item {i} of the dataset holds a {type(image).__name__}, not an image tensor. "
                         "Fix: give the dataset a transform to tensors in [0,1] (torchvision's ToTensor)")
    return torch.as_tensor(image).float(), item[1]


def _check_pixels(images: torch.Tensor, what: str) -> None:
    """Distances are measured in [0,1] pixel space: normalized or 0..255 images would give other numbers."""
    if images.numel() and (not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1):
        raise ValueError(f"{what} has pixels outside [0,1] (from {images.min().item():.3g} to "
                         f"{images.max().item():.3g}). Fix: pass images in [0,1] and the model's input "
                         "normalization as normalization={'mean': ..., 'std': ...}")


def _labels(y, n: int) -> np.ndarray:
    labels = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y)
    if labels.shape != (n,):
        raise ValueError(f"y has shape {labels.shape} for {n} images: give one label per image")
    if n and (labels.dtype.kind not in "iub" or labels.min() < 0):
        raise ValueError("y must hold class numbers 0, 1, … (integers ≥ 0)")
    return labels.astype(np.int64)


def sample_index_of(sample_index, n: int) -> np.ndarray:
    if sample_index is None:
        return np.arange(n, dtype=np.int64)
    index = np.asarray(sample_index)
    if index.shape != (n,) or index.dtype.kind not in "iu" or (n and index.min() < 0) or len(np.unique(index)) != n:
        raise ValueError(f"sample_index must hold {n} distinct integers ≥ 0, one per image")
    return index.astype(np.int64)


def groups_of(sensitive_features, n: int) -> dict[str, pd.Categorical]:
    """The sensitive features as fairlearn takes them (a DataFrame, a dict of arrays, one array or a
    named Series), each as a categorical of readable group names; the order of a categorical's own
    categories is kept, other values are sorted."""
    if sensitive_features is None:
        return {}
    if isinstance(sensitive_features, pd.DataFrame):
        columns = {str(name): sensitive_features[name] for name in sensitive_features.columns}
    elif isinstance(sensitive_features, Mapping):
        columns = {str(name): values for name, values in sensitive_features.items()}
    else:
        name = getattr(sensitive_features, "name", None)
        columns = {str(name) if name is not None else "sensitive_feature_0": sensitive_features}
    groups = {}
    for name, values in columns.items():
        if name in RESERVED or INTERSECTION in name:
            raise ValueError(f"sensitive feature {name!r}: the records already have a column of that name "
                             "(or it holds ×, which names intersections). Fix: rename it")
        values = values.cpu().numpy() if isinstance(values, torch.Tensor) else values
        column = pd.Series(values.to_numpy() if isinstance(values, pd.Series) else values, copy=False)
        if isinstance(values, pd.Series) and isinstance(values.dtype, pd.CategoricalDtype):
            column = column.astype(values.dtype)
        if column.shape != (n,):
            raise ValueError(f"sensitive feature {name!r} has {len(column)} values for {n} images")
        if column.isna().any():
            raise ValueError(f"sensitive feature {name!r} has a missing value at position "
                             f"{int(np.flatnonzero(column.isna())[0])}: give every image a group")
        categories = column.cat.categories if isinstance(column.dtype, pd.CategoricalDtype) else sorted(column.unique())
        names = [str(c) for c in categories]
        if len(set(names)) != len(names):
            raise ValueError(f"sensitive feature {name!r}: two groups read alike as text ({names})")
        codes = pd.Categorical(column, categories=categories).codes
        groups[name] = pd.Categorical.from_codes(codes, categories=names)
    return groups


class AuditedImages(Dataset):
    """The images as the engine reads them: item ``sample_index`` is (image, label, group codes), and
    ``metadata`` gives the table an ImageTable gives (sample_index, label, class, one column per
    sensitive feature), so the records have the command line's columns."""

    def __init__(self, source: Source, index: np.ndarray, class_names: list[str], groups: dict[str, pd.Categorical]):
        self.source, self.index, self.class_names, self.groups = source, pd.Index(index), class_names, groups
        codes = np.stack([groups[name].codes for name in groups], 1) if groups else np.zeros((len(index), 0))
        self.codes = torch.as_tensor(codes, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, sample: int):
        position = self.index.get_loc(sample)
        return self.source.image(position), int(self.source.labels[position]), self.codes[position]

    def metadata(self, indices) -> pd.DataFrame:
        positions = self.index.get_indexer(np.asarray(indices))
        labels = self.source.labels[positions]
        table = pd.DataFrame({"sample_index": np.asarray(indices, dtype=np.int64), "label": labels,
                              "class": pd.Categorical.from_codes(labels, categories=self.class_names)})
        for name, values in self.groups.items():
            table[name] = pd.Categorical.from_codes(values.codes[positions], categories=values.categories)
        return table

    def fingerprint(self) -> dict:
        """What of the data shapes the records: the images, labels, ids, class names and groups."""
        groups = {name: [list(values.categories), hashlib.sha256(values.codes.tobytes()).hexdigest()]
                  for name, values in self.groups.items()}
        return {"images": self.source.digest, "labels": hashlib.sha256(self.source.labels.tobytes()).hexdigest(),
                "sample_index": hashlib.sha256(self.index.to_numpy().tobytes()).hexdigest(),
                "classes": self.class_names, "groups": groups}
