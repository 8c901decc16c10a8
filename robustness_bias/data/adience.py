"""Adience (Eidinger, Enbar, Hassner 2014): faces in the wild with age group and gender.

The labels live in five tab-separated fold files ``fold_{0..4}_data.txt`` (columns user_id,
original_image, face_id, age, gender, …); images in ``aligned/<user_id>/
landmark_aligned_face.<face_id>.<original_image>``. Folds 0–3 are the training set, fold 4 the
test set, as in the paper. The age column mixes the eight official groups (``OFFICIAL_AGES``, as the fold
files spell them: "(8, 12)" is the group the paper calls 8–13) with stray strings such as "(38, 42)",
"(8, 23)" or "35"; each is mapped to the group nearest to its midpoint (ties go to the older
group); "None" and empty ages are dropped and counted.
"""

from __future__ import annotations

import logging
import re

import pandas as pd

from ..config.data import AdienceData
from ..config.rules import check_values
from .base import DataError, ImageDataModule, existing_root
from .files import FileImages, missing_files

log = logging.getLogger(__name__)

AGE_GROUPS = [(0, 2), (4, 6), (8, 13), (15, 20), (25, 32), (38, 43), (48, 53), (60, 100)]
AGE_NAMES = ["0-2", "4-6", "8-13", "15-20", "25-32", "38-43", "48-53", "60+"]
# The eight groups as the fold files write them, in the order of AGE_GROUPS; every other age string is stray.
OFFICIAL_AGES = ("(0, 2)", "(4, 6)", "(8, 12)", "(15, 20)", "(25, 32)", "(38, 43)", "(48, 53)", "(60, 100)")
GENDERS = {"m": "male", "f": "female", "u": "unknown", "": "unknown"}
FOLDS = 5
TEST_FOLD = 4


def age_group(text: str) -> int | None:
    """The age group of an Adience age string: "(25, 32)", "(38, 42)", "35", or None when absent."""
    numbers = [int(n) for n in re.findall(r"\d+", str(text))]
    if not numbers:
        return None
    middle = sum(numbers) / len(numbers)
    distances = [0.0 if low <= middle <= high else min(abs(middle - low), abs(middle - high))
                 for low, high in AGE_GROUPS]
    best = min(distances)
    return max(i for i, d in enumerate(distances) if d == best)


class AdienceDataModule(ImageDataModule):
    """Adience with 8 age groups as classes and gender as attribute; folds 0–3 train, fold 4 test."""

    label_name = "age"

    def __init__(self, root: str | None = None, image_size: int | None = AdienceData.image_size,
                 cache: bool = AdienceData.cache, drop_unknown_gender: bool = AdienceData.drop_unknown_gender, **kwargs):
        super().__init__(**kwargs)
        check_values(AdienceData, "dataset", image_size=image_size, cache=cache, drop_unknown_gender=drop_unknown_gender)
        hint = ("It must hold Adience's fold files fold_0_data.txt … fold_4_data.txt and the folder aligned/ "
                "(from AdienceBenchmarkGenderAndAgeClassification). Fix: pass dataset.root=/path/to/adience")
        self.root = existing_root(root, "dataset.root", hint)
        missing = [f"fold_{k}_data.txt" for k in range(FOLDS) if not (self.root / f"fold_{k}_data.txt").is_file()]
        if not (self.root / "aligned").is_dir():
            missing.append("aligned/")
        if missing:
            raise DataError(f"dataset.root={root}: missing {missing}. {hint}")
        self.image_size, self.cache, self.drop_unknown_gender = image_size, cache, drop_unknown_gender

    def read_folds(self) -> pd.DataFrame:
        frames = []
        for fold in range(FOLDS):
            path = self.root / f"fold_{fold}_data.txt"
            frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
            absent = {"user_id", "original_image", "face_id", "age", "gender"} - set(frame.columns)
            if absent:
                raise DataError(f"{path} lacks the column(s) {sorted(absent)}: is it an Adience fold file?")
            frames.append(frame.assign(fold=fold))
        return pd.concat(frames, ignore_index=True)

    def load(self) -> FileImages:
        rows = self.read_folds()
        rows["group"] = rows["age"].map(age_group)
        no_age = rows["group"].isna()
        rows["gender_name"] = rows["gender"].str.strip().str.lower().map(GENDERS).fillna("unknown")
        unknown = rows["gender_name"] == "unknown"
        dropped = no_age | (unknown if self.drop_unknown_gender else False)
        self.facts.update(rows=len(rows), without_age=int(no_age.sum()), unknown_gender=int(unknown.sum()),
                          dropped=int(dropped.sum()),
                          stray_ages=sorted(set(rows.loc[~no_age & ~rows["age"].isin(OFFICIAL_AGES), "age"])))
        if no_age.any():
            log.warning("Adience: dropped %d face(s) without an age", int(no_age.sum()))
        rows = rows[~dropped].reset_index(drop=True)
        paths = [self.root / "aligned" / r.user_id / f"landmark_aligned_face.{r.face_id}.{r.original_image}"
                 for r in rows.itertuples()]
        missing_files(paths, "the fold files")
        genders = sorted(set(rows["gender_name"]), key=["male", "female", "unknown"].index)
        return FileImages(paths, rows["group"].astype(int).to_numpy(), AGE_NAMES,
                          attributes={"gender": rows["gender_name"].map(genders.index).to_numpy()},
                          categories={"gender": genders}, channels=3, image_size=self.image_size, cache=self.cache,
                          is_test=(rows["fold"] == TEST_FOLD).to_numpy(),   # validation: a seeded share of folds 0–3
                          max_pixels=self.max_image_pixels)
