"""The schemas of ``conf/dataset``: what every data module takes and each dataset's own settings, each default
given here once (the data modules take their defaults from these; conf/dataset/*.yaml names the class, where
the data lies, its normalization and what differs from these)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from omegaconf import MISSING

from .rules import (FLAG, POSITIVES, PROBABILITIES, ConfigError, Rule, at_least_zero, elsewhere, fraction, one_of,
                    optional, positive, probability, setting, whole)

IMAGE_SIZE = optional(whole(1, 64), "to keep the images' own size")
CHANNELS = Rule(lambda v: v in (1, 3) and not isinstance(v, bool), "must be 1 (grey) or 3 (colour)", "3")
BALANCE_BY = optional(Rule(lambda v: isinstance(v, str) and bool(v), "must be an attribute name or class", "race"),
                      "for the plain shuffle")
BATCH, EVAL_BATCH, TEST_FRACTION = whole(1, 64), whole(1, 256), fraction(0.2)
TEST_SHARE = 0.2   # the paper's 80/20 split, where a dataset has no official test set


@dataclass
class Normalization:
    """Per-channel statistics the model's first layer subtracts and divides by (each dataset's own: its YAML)."""

    mean: List[float] = MISSING
    std: List[float] = MISSING


@dataclass
class DataConfig:
    """What every data module takes: batches, the validation split and its seed."""

    _target_: str = MISSING
    normalization: Normalization = MISSING
    batch_size: int = setting(BATCH, 64)
    eval_batch_size: int = setting(EVAL_BATCH, 256)
    num_workers: int = setting(whole(0, 0), 0, shapes_results=False)
    val_fraction: float = setting(fraction(0.1), 0.1)   # held out of the training images for validation curves
    split_seed: int = setting(whole(0, 42), 42)          # the paper's split seed
    # group-balanced training (the mitigation's baseline): training batches drawn with every group of this
    # attribute (or class) equally likely; null: the plain shuffle. Left out of the fingerprint while null.
    balance_by: Optional[str] = setting(BALANCE_BY, None, hashed_at_default=False)


@dataclass
class DigitsData(DataConfig):
    """scikit-learn's bundled 8×8 digits."""

    eval_batch_size: int = setting(EVAL_BATCH, 512)
    test_fraction: float = setting(TEST_FRACTION, TEST_SHARE)


@dataclass
class SyntheticData(DataConfig):
    """Generated images with a planted bias (robustness_bias/data/synthetic.py)."""

    eval_batch_size: int = setting(EVAL_BATCH, 512)
    test_fraction: float = setting(TEST_FRACTION, TEST_SHARE)
    n_samples: int = setting(whole(10, 2000), 2000)
    n_classes: int = setting(whole(2, 2), 2)
    channels: int = setting(whole(1, 1), 1)
    image_size: int = setting(whole(1, 8), 8)
    separation: float = setting(at_least_zero(2.0), 2.0)   # L2 distance (pixel space) of each prototype from grey
    noise: float = setting(at_least_zero(0.1), 0.1)        # per-pixel Gaussian noise
    planted_share: float = setting(probability(0.3), 0.3)  # share of samples in the planted group
    planted_margin: float = setting(positive(0.4), 0.4)    # planted samples sit this fraction of the way out
    shared_separation: float = setting(at_least_zero(0.0), 0.0)   # a second class signal, alike in both groups
    stratum_margins: List[float] = setting(POSITIVES, [])              # []: no strata
    stratum_planted_shares: List[float] = setting(PROBABILITIES, [])   # one per stratum
    seed: int = setting(whole(0, 0), 0)

    def check(self, key: str) -> None:
        if len(self.stratum_margins) != len(self.stratum_planted_shares):
            raise ConfigError(f"{key}.stratum_margins has {len(self.stratum_margins)} strata but "
                              f"{key}.stratum_planted_shares {len(self.stratum_planted_shares)}. Fix: give both one "
                              "entry per stratum (or both [] for none)")


@dataclass
class CifarData(DataConfig):
    """CIFAR-10, CIFAR-100 and its super-classes: the official test batches are the test set."""

    root: Optional[str] = elsewhere()   # where the data lies; what it is: dataset.json's content, checked on resume
    batch_size: int = setting(BATCH, 128)
    eval_batch_size: int = setting(EVAL_BATCH, 512)
    download: bool = setting(FLAG, False)   # true: torchvision downloads the archive into root, where a network is
    image_size: Optional[int] = setting(IMAGE_SIZE, None)   # a square of this size (bilinear); null keeps 32×32


@dataclass
class FileData(DataConfig):
    """Data sets read from image files, some of which may not decode."""

    root: Optional[str] = elsewhere()   # where the data lies; what it is: dataset.json's content, checked on resume
    image_size: Optional[int] = setting(IMAGE_SIZE, None)   # a square of this size; null keeps the files' size
    cache: bool = setting(FLAG, False)   # decode every image once into memory (faster epochs; needs the RAM)
    # undecodable image files: skip (left out, listed in dataset.json) or raise (stop, naming them)
    on_bad_file: str = setting(one_of("skip", "raise"), "skip")
    # larger image files are refused before decoding (a decompression bomb); whether a run starts, not its results
    max_image_pixels: int = setting(whole(1, 40_000_000), 40_000_000, shapes_results=False)


@dataclass
class UTKFaceData(FileData):
    """UTKFace's aligned and cropped faces (200×200)."""

    test_fraction: float = setting(TEST_FRACTION, TEST_SHARE)
    deduplicate: bool = setting(FLAG, True)   # collapse byte-identical files (375 groups in the distribution)
    on_conflict: str = setting(one_of("drop", "keep_first"), "drop")   # identical files whose labels disagree


@dataclass
class AdienceData(FileData):
    """Adience's aligned faces; folds 0–3 train, fold 4 tests."""

    image_size: Optional[int] = setting(IMAGE_SIZE, 224)   # the paper resized to 224
    drop_unknown_gender: bool = setting(FLAG, False)   # true drops faces whose gender is 'u' or empty


@dataclass
class ImageFolderData(FileData):
    """Your own images and their labels.csv (README, "Your own data")."""

    test_fraction: float = setting(TEST_FRACTION, TEST_SHARE)   # without a split column: the test set's share
    csv: str = elsewhere("labels.csv")   # where the labels lie, in root (their content is the data's: dataset.json)
    channels: int = setting(CHANNELS, 3)
    attributes: Optional[List[str]] = None   # the partitions, e.g. [site,camera]; null: every column but path, label, split
