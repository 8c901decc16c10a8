"""What every dataset provides: images in [0,1], labels, and sensitive attributes per sample.

A sample is ``(image, label, attributes)``, where ``attributes`` holds one integer code per
attribute (their readable names live in :attr:`ImageTable.categories`). Labels and attributes
are known without decoding any image, so audits and partitions never touch pixels needlessly.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, Subset

from ..config.data import TEST_SHARE, DataConfig, FileData
from ..config.rules import ConfigError, rule_of
from .errors import DataError
from .sampling import GroupBalancedSampler, split_indices, split_official

log = logging.getLogger(__name__)




def existing_root(root, setting: str, hint: str, must_exist: bool = True) -> Path:
    """The dataset folder ``root`` as a path, or an error that names ``setting`` and says what is wrong.

    ``hint`` says what is expected there and the fix ("It must hold …. Fix: pass …"); it ends both
    the message for an unset ``root`` and, with ``must_exist``, the one for a folder that does not exist.
    """
    if not root:
        raise DataError(f"{setting} is not set. {hint}")
    path = Path(str(root)).expanduser()
    if must_exist and not path.is_dir():
        raise DataError(f"{setting}={root}: no such folder. {hint}")
    return path


class ImageTable(Dataset):
    """Labelled images with categorical attributes; subclasses say how to produce image ``i``.

    ``is_test`` marks the samples of a dataset's own test set (one flag per sample); None when the
    dataset has none, and :meth:`ImageDataModule.split` draws a seeded test set instead.
    """

    def __init__(self, labels: np.ndarray, class_names: Sequence[str], attributes: dict[str, np.ndarray] | None = None,
                 categories: dict[str, Sequence[str]] | None = None, is_test: np.ndarray | None = None):
        self.labels = np.asarray(labels, dtype=np.int64)
        self.class_names = [str(c) for c in class_names]
        self.attributes = {k: np.asarray(v, dtype=np.int64) for k, v in (attributes or {}).items()}
        self.categories = {k: [str(c) for c in v] for k, v in (categories or {}).items()}
        if set(self.attributes) != set(self.categories):
            raise ValueError("every attribute needs its list of categories")
        self.is_test = None if is_test is None else np.asarray(is_test, dtype=bool)
        if self.is_test is not None and self.is_test.shape != self.labels.shape:
            raise ValueError(f"is_test has shape {self.is_test.shape} for {len(self.labels)} samples")
        self._check_labels()
        self._attribute_matrix = torch.as_tensor(
            np.stack([self.attributes[k] for k in self.attributes], 1) if self.attributes
            else np.zeros((len(self.labels), 0), dtype=np.int64)
        )

    def _check_labels(self) -> None:
        """A label without a class would crash training far from its cause; name it here."""
        k = len(self.class_names)
        outside = np.flatnonzero((self.labels < 0) | (self.labels >= k))
        if outside.size:
            first = outside[0]
            raise DataError(f"{outside.size} sample(s) have a label outside 0..{k - 1} (the {k} classes "
                            f"{self.class_names[:5]}{'…' if k > 5 else ''}), e.g. sample {first} with label "
                            f"{self.labels[first]}. Fix: give every sample a label in 0..{k - 1}, or name every "
                            "class in class_names")

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int) -> torch.Tensor:
        raise NotImplementedError

    def source(self, index: int) -> str:
        """Where sample ``index`` comes from, for messages about it."""
        return f"sample {index}"

    def unreadable(self) -> dict[int, str]:
        """Index → reason for every image that cannot be decoded; tables held in memory have none."""
        return {}

    def __getitem__(self, index: int):
        return self.image(index), int(self.labels[index]), self._attribute_matrix[index]

    def digest(self, *splits: np.ndarray) -> str:
        """What this data is, as a hash: the images (:meth:`image_digest`), labels, classes, attributes and the
        ``splits``' indices; never where it lies, so that a copied dataset folder is the same data."""
        hashed = hashlib.sha256(self.image_digest().encode())
        for part in (self.labels, *(self.attributes[name] for name in sorted(self.attributes)), *splits):
            hashed.update(np.ascontiguousarray(part, dtype=np.int64).tobytes())
        hashed.update(repr((self.class_names, sorted(self.categories.items()))).encode())
        return hashed.hexdigest()[:16]

    def image_digest(self) -> str:
        """A hash of the images as cheap as the table allows: tables held in memory hash their pixels."""
        raise NotImplementedError

    def metadata(self, indices: np.ndarray) -> pd.DataFrame:
        """One row per sample: its index, label, class name and every attribute by readable name."""
        table = pd.DataFrame({
            "sample_index": np.asarray(indices, dtype=np.int64),
            "label": self.labels[indices],
            "class": pd.Categorical.from_codes(self.labels[indices], categories=self.class_names),
        })
        for name, codes in self.attributes.items():
            table[name] = pd.Categorical.from_codes(codes[indices], categories=self.categories[name])
        return table


class TensorImages(ImageTable):
    """An image table held in memory as one float tensor (N, C, H, W) in [0,1]."""

    def __init__(self, images: torch.Tensor, labels, class_names, attributes=None, categories=None, is_test=None):
        super().__init__(labels, class_names, attributes, categories, is_test)
        if images.shape[0] != len(self.labels):
            raise ValueError(f"{images.shape[0]} images but {len(self.labels)} labels")
        self.images = images.float().contiguous()

    def image(self, index: int) -> torch.Tensor:
        return self.images[index]

    def image_digest(self) -> str:
        return hashlib.sha256(self.images.numpy().tobytes()).hexdigest()


class ImageDataModule(L.LightningDataModule):
    """Seeded train/validation/test split of an :class:`ImageTable`, with the dataset's normalization.

    ``label_name`` says what the classes are where "class" does not say it (the age bin of a face): figures
    and the console call the ``class`` partition by it; records and summaries keep the column ``class``.
    """

    label_name: str | None = None

    def __init__(self, normalization: dict, batch_size: int = DataConfig.batch_size,
                 eval_batch_size: int = DataConfig.eval_batch_size, num_workers: int = DataConfig.num_workers,
                 val_fraction: float = DataConfig.val_fraction, test_fraction: float = TEST_SHARE,
                 split_seed: int = DataConfig.split_seed, on_bad_file: str = FileData.on_bad_file,
                 max_image_pixels: int = FileData.max_image_pixels, balance_by: str | None = DataConfig.balance_by):
        super().__init__()
        for schema, key, value in ((FileData, "on_bad_file", on_bad_file), (FileData, "max_image_pixels", max_image_pixels),
                                   (DataConfig, "batch_size", batch_size), (DataConfig, "eval_batch_size", eval_batch_size),
                                   (DataConfig, "num_workers", num_workers), (DataConfig, "split_seed", split_seed),
                                   (DataConfig, "balance_by", balance_by)):
            rule_of(schema, key).check(f"dataset.{key}", value)   # the command line's rules, for data modules made in Python
        self.on_bad_file = on_bad_file
        self.max_image_pixels = max_image_pixels   # image files larger than this are refused before decoding
        self.normalization = {"mean": list(normalization["mean"]), "std": list(normalization["std"])}
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed
        self.balance_by = balance_by
        # the job's seed (Lightning's seed_everything seeds torch just before the pipeline builds this module), read
        # without drawing from torch's generator, so a balanced job's model starts from the plain job's weights
        self.sampling_seed = torch.initial_seed() % 2**31
        self.table: ImageTable | None = None
        self.facts: dict = {}   # counts worth keeping with the run (written to dataset.json)

    def load(self) -> ImageTable:
        """Read the whole dataset (labels and attributes eagerly; images may stay lazy)."""
        raise NotImplementedError

    def split(self, table: ImageTable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Train / validation / test indices: the table's own test set (``is_test``) with a seeded
        ``val_fraction`` of the rest for validation, or else a seeded random split of the whole table."""
        if table.is_test is not None:
            return split_official(table.is_test, self.val_fraction, self.split_seed)
        return split_indices(len(table), self.val_fraction, self.test_fraction, self.split_seed)

    def setup(self, stage: str | None = None) -> None:
        if self.table is not None:
            return
        table = self.load()
        splits = self.split(table)      # of the whole table, so that a bad file never reshuffles the others
        bad = self.find_bad_files(table)
        self.train_indices, self.val_indices, self.test_indices = (s[~np.isin(s, bad)] for s in splits)
        if bad and not (len(self.train_indices) and len(self.test_indices)):
            raise DataError(f"{len(bad)} of {len(table)} images cannot be decoded, which leaves no training or no "
                            "test images (see the warning above). Fix: remove or replace the broken files")
        self.table = table
        if self.balance_by is not None:
            self.facts["balanced_by"] = self.balance_groups_count()
        self.warn_thin_classes()
        self.facts.update(samples=len(table), classes=table.class_names, label_name=self.label_name,
                          split={"train": len(self.train_indices), "val": len(self.val_indices),
                                 "test": len(self.test_indices)},
                          content=table.digest(self.train_indices, self.val_indices, self.test_indices))

    def warn_thin_classes(self) -> None:
        """Name the classes the split left without training or without test images: a class with
        one or a few images can fall wholly on one side, and then it is never learned or never audited."""
        k = len(self.table.class_names)
        train, test = (np.bincount(self.table.labels[s], minlength=k) for s in (self.train_indices, self.test_indices))
        thin = [f"{name} ({train[c]} train, {test[c]} test)" for c, name in enumerate(self.table.class_names)
                if not (train[c] and test[c])]
        if thin:
            shown = ", ".join(thin[:10]) + (" …" if len(thin) > 10 else "")
            log.warning("%d class(es) have no training or no test image after the split: %s. Fix: add images of "
                        "them, or leave them out of the data", len(thin), shown)

    def find_bad_files(self, table: ImageTable) -> list[int]:
        """Indices of the images that cannot be decoded, listed in the facts and left out (``skip``), or
        an error naming them (``raise``): a truncated download should not stop a run hours into training."""
        reasons = table.unreadable()
        bad = sorted(({"path": table.source(i), "reason": reason} for i, reason in reasons.items()),
                     key=lambda entry: entry["path"])
        self.facts.update(bad_file_count=len(bad), bad_files=bad)
        if not bad:
            return []
        examples = "; ".join(f"{entry['path']} ({entry['reason']})" for entry in bad[:3])
        examples += "; …" if len(bad) > 3 else ""
        if self.on_bad_file == "raise":
            raise DataError(f"{len(bad)} image file(s) cannot be decoded: {examples}. "
                            "Fix: remove or replace the file(s), or pass dataset.on_bad_file=skip to leave them out")
        log.warning("left out %d image file(s) that cannot be decoded (all listed in dataset.json): %s",
                    len(bad), examples)
        return sorted(reasons)

    @property
    def input_shape(self) -> tuple[int, ...]:
        self.setup()
        return tuple(self.table[int(self.train_indices[0])][0].shape)     # index 0 may be a bad file

    @property
    def num_classes(self) -> int:
        self.setup()
        return len(self.table.class_names)

    @property
    def partitions(self) -> list[str]:
        """Columns that can split the test set into groups: the class, then every attribute."""
        self.setup()
        return ["class", *self.table.attributes]

    def test_metadata(self) -> pd.DataFrame:
        self.setup()
        return self.table.metadata(self.test_indices)

    def _loader(self, indices: np.ndarray, shuffle: bool, batch_size: int, unrepeated_share: bool = False,
                ) -> DataLoader:
        subset = Subset(self.table, indices.tolist())
        sampler = None
        if unrepeated_share:
            sampler = UnrepeatedDistributedSampler(subset, num_replicas=self.trainer.world_size,
                                                   rank=self.trainer.global_rank, shuffle=False)
        return DataLoader(subset, batch_size=batch_size, shuffle=shuffle, sampler=sampler,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def _evaluation_loader(self, indices: np.ndarray) -> DataLoader:
        """Under DDP every rank evaluates its own share and each sample is seen once: Lightning's
        DistributedSampler would pad the shares with repeats, so accuracy would count some twice."""
        distributed = self.trainer is not None and self.trainer.world_size > 1
        return self._loader(indices, False, self.eval_batch_size, unrepeated_share=distributed)

    def balance_groups(self, indices: np.ndarray) -> np.ndarray:
        """The code of each of ``indices`` in ``balance_by``'s partition (the class, or an attribute)."""
        if self.balance_by == "class":
            return self.table.labels[indices]
        if self.balance_by not in self.table.attributes:
            raise ConfigError(f"dataset.balance_by={self.balance_by}: this dataset has no such attribute. Fix: choose "
                              f"among {['class', *self.table.attributes]}, or null for the plain shuffle")
        return self.table.attributes[self.balance_by][indices]

    def balance_groups_count(self) -> dict[str, int]:
        """Training images per group of ``balance_by`` (dataset.json's ``balanced_by``): what the sampler evens out."""
        names = self.table.class_names if self.balance_by == "class" else self.table.categories.get(self.balance_by)
        codes, counts = np.unique(self.balance_groups(self.train_indices), return_counts=True)
        return {"attribute": self.balance_by, **{names[c]: int(n) for c, n in zip(codes, counts)}}

    def train_dataloader(self) -> DataLoader:
        if self.balance_by is None:
            return self._loader(self.train_indices, True, self.batch_size)
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer is not None else (1, 0)
        sampler = GroupBalancedSampler(self.balance_groups(self.train_indices), self.sampling_seed, world, rank)
        return DataLoader(Subset(self.table, self.train_indices.tolist()), batch_size=self.batch_size, sampler=sampler,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        return self._evaluation_loader(self.val_indices)

    def test_dataloader(self) -> DataLoader:
        return self._evaluation_loader(self.test_indices)
