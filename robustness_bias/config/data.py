"""The schemas of ``conf/dataset``: what every data module takes, and each dataset's own settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from omegaconf import MISSING

from .rules import (FLAG, POSITIVES, PROBABILITIES, Rule, at_least_zero, elsewhere, fraction, one_of, optional, positive,
                    probability, setting, whole)


@dataclass
class Normalization:
    """Per-channel statistics the model's first layer subtracts and divides by."""

    mean: List[float] = MISSING
    std: List[float] = MISSING


IMAGE_SIZE = optional(whole(1, 64), "to keep the images' own size")
CHANNELS = Rule(lambda v: v in (1, 3) and not isinstance(v, bool), "must be 1 (grey) or 3 (colour)", "3")


@dataclass
class DataConfig:
    """What every data module takes: batches, the validation split and its seed."""

    _target_: str = MISSING
    normalization: Normalization = MISSING
    batch_size: int = setting(whole(1, 64))
    eval_batch_size: int = setting(whole(1, 256))
    num_workers: int = setting(whole(0, 0), shapes_results=False)
    val_fraction: float = setting(fraction(0.1))
    split_seed: int = setting(whole(0, 42))


@dataclass
class DigitsData(DataConfig):
    test_fraction: float = setting(fraction(0.2))


@dataclass
class SyntheticData(DataConfig):
    """Generated images with a planted bias; the data module checks how its numbers relate."""

    test_fraction: float = setting(fraction(0.2))
    n_samples: int = setting(whole(10, 2000))
    n_classes: int = setting(whole(2, 2))
    channels: int = setting(whole(1, 1))
    image_size: int = setting(whole(1, 8))
    separation: float = setting(at_least_zero(2.0))
    noise: float = setting(at_least_zero(0.1))
    planted_share: float = setting(probability(0.3))
    planted_margin: float = setting(positive(0.4))
    shared_separation: float = setting(at_least_zero(0.0))
    stratum_margins: List[float] = setting(POSITIVES)              # []: no strata
    stratum_planted_shares: List[float] = setting(PROBABILITIES)   # one per stratum
    seed: int = setting(whole(0, 0))


@dataclass
class CifarData(DataConfig):
    root: Optional[str] = elsewhere()   # where the data lies; what it is: dataset.json's content, checked on resume
    download: bool = setting(FLAG)
    image_size: Optional[int] = setting(IMAGE_SIZE)


@dataclass
class FileData(DataConfig):
    """Data sets read from image files, some of which may not decode."""

    root: Optional[str] = elsewhere()   # where the data lies; what it is: dataset.json's content, checked on resume
    image_size: Optional[int] = setting(IMAGE_SIZE)
    cache: bool = setting(FLAG)
    on_bad_file: str = setting(one_of("skip", "raise"))   # skip: leave them out, listed; raise: stop, naming them
    # larger image files are refused before decoding (a decompression bomb); whether a run starts, not its results
    max_image_pixels: int = setting(whole(1, 40_000_000), shapes_results=False)


@dataclass
class UTKFaceData(FileData):
    test_fraction: float = setting(fraction(0.2))
    deduplicate: bool = setting(FLAG)
    on_conflict: str = setting(one_of("drop", "keep_first"))


@dataclass
class AdienceData(FileData):
    drop_unknown_gender: bool = setting(FLAG)


@dataclass
class ImageFolderData(FileData):
    test_fraction: float = setting(fraction(0.2))
    csv: str = elsewhere()   # where the labels lie (their content is the data's: dataset.json)
    channels: int = setting(CHANNELS)
    attributes: Optional[List[str]] = None   # null: every column but path, label and split
