"""How a dataset's images are split and drawn: seeded train/validation/test splits (random, or the dataset's own
test set), and the group-balanced draw of training images (``dataset.balance_by``)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from ..config.data import DataConfig
from ..config.rules import rule_of
from .errors import DataError


def _check_fraction(name: str, value: float) -> None:
    rule_of(DataConfig, "val_fraction").check(f"dataset.{name}", value)   # the schema's rule for either fraction


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    """Train / validation / test indices from a seeded permutation (each sorted, for readable records)."""
    _check_fraction("val_fraction", val_fraction)
    _check_fraction("test_fraction", test_fraction)
    if val_fraction + test_fraction >= 1:
        raise DataError("dataset.val_fraction + dataset.test_fraction must leave samples for training")
    order = np.random.default_rng(seed).permutation(n)
    n_test, n_val = math.ceil(n * test_fraction), math.ceil(n * val_fraction)
    test, val, train = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
    return np.sort(train), np.sort(val), np.sort(test)


def split_official(is_test: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    """Keep a dataset's own test set; hold out a seeded ``val_fraction`` of the rest for validation."""
    _check_fraction("val_fraction", val_fraction)
    is_test = np.asarray(is_test, dtype=bool)
    rest = np.flatnonzero(~is_test)
    order = np.random.default_rng(seed).permutation(len(rest))
    n_val = math.ceil(len(rest) * val_fraction)
    return np.sort(rest[order[n_val:]]), np.sort(rest[order[:n_val]]), np.flatnonzero(is_test)


class GroupBalancedSampler(DistributedSampler):
    """Training indices drawn with replacement so that every group of an attribute is equally likely.

    Why sampling, not reweighting the loss by inverse group frequency: every batch then holds the groups in
    about equal shares, so the loss, its logged value and the robustness-bias regularizer (which compares
    groups within a batch) all see a balanced batch, and a small group's few images are not multiplied into
    large, noisy gradients. An epoch draws as many images as the training set holds, so it costs what a plain
    epoch costs and training times compare. Small groups' images repeat within an epoch; large groups' are
    left out of some.

    Each epoch's draw is seeded by ``seed`` and the epoch (:meth:`set_epoch`, which Lightning calls), so every
    DDP rank draws the same list and takes its own share of it (every ``num_replicas``-th from ``rank``); being
    a DistributedSampler, Lightning leaves it in place instead of wrapping it in one of its own.
    """

    def __init__(self, groups: np.ndarray, seed: int, num_replicas: int = 1, rank: int = 0):
        groups = np.asarray(groups)
        if groups.size == 0:
            raise DataError("dataset.balance_by: there are no training images to draw from")
        super().__init__(range(len(groups)), num_replicas=num_replicas, rank=rank, shuffle=False, seed=seed)
        counts = np.unique(groups, return_counts=True)
        share = dict(zip(*counts))
        self.weights = torch.as_tensor([1.0 / share[g] for g in groups], dtype=torch.float64)
        self.groups = len(share)
        self.total_size = math.ceil(len(groups) / num_replicas) * num_replicas
        self.num_samples = self.total_size // num_replicas

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        drawn = torch.multinomial(self.weights, self.total_size, replacement=True, generator=generator)
        return iter(drawn[self.rank::self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples
