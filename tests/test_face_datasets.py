"""UTKFace and Adience loaders on tiny fixtures written in each dataset's real on-disk format."""

import io
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from robustness_bias.data import AdienceDataModule, DataError, UTKFaceDataModule
from robustness_bias.data.adience import AGE_NAMES as ADIENCE_AGES
from robustness_bias.data.adience import OFFICIAL_AGES, age_group
from robustness_bias.data.utkface import AGE_NAMES, age_bin, parse_name

NORM = {"mean": [0.0] * 3, "std": [1.0] * 3}


def jpeg_bytes(seed: int, size: int = 8) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_utkface(root: Path) -> dict:
    """30 distinct faces, 3 malformed names, a consistent duplicate pair and a conflicting one."""
    root.mkdir(parents=True)
    ages = [1, 14, 15, 24, 25, 39, 40, 59, 60, 116]
    names = []
    for i in range(30):
        name = f"{ages[i % 10]}_{i % 2}_{i % 5}_2017011{i:09d}.jpg.chip.jpg"
        (root / name).write_bytes(jpeg_bytes(i))
        names.append(name)
    for i, stem in enumerate(["39_1_20170116174525125", "61_1_20170109142408075", "61_1_20170109150557335"]):
        (root / f"{stem}.jpg.chip.jpg").write_bytes(jpeg_bytes(100 + i))     # no race field
    # the same bytes under the same labels (keep one) and under conflicting labels (drop both)
    (root / "25_0_2_20170101000000001.jpg.chip.jpg").write_bytes(jpeg_bytes(200))
    (root / "25_0_2_20170101000000002.jpg.chip.jpg").write_bytes(jpeg_bytes(200))
    (root / "30_0_1_20170101000000003.jpg.chip.jpg").write_bytes(jpeg_bytes(201))
    (root / "30_1_1_20170101000000004.jpg.chip.jpg").write_bytes(jpeg_bytes(201))
    return {"names": names}


@pytest.fixture
def utkface(tmp_path):
    root = tmp_path / "UTKFace"
    write_utkface(root)
    return root


def test_utkface_names_and_bins():
    assert parse_name("100_0_0_20170112213500903.jpg.chip.jpg") == (100, 0, 0)
    assert parse_name("39_1_20170116174525125.jpg.chip.jpg") is None
    assert parse_name("25_2_0_20170116174525125.jpg.chip.jpg") is None      # gender is 0 or 1
    assert parse_name("24_0_1_20170116220224657 .jpg.chip.jpg") == (24, 0, 1)     # as distributed
    assert parse_name("55_0_0_20170116232725357jpg.chip.jpg") == (55, 0, 0)
    assert [age_bin(a) for a in (0, 14, 15, 24, 25, 39, 40, 59, 60, 116)] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_utkface_counts_labels_and_attributes(utkface):
    data = UTKFaceDataModule(root=str(utkface), normalization=NORM, val_fraction=0.1, test_fraction=0.2)
    data.setup()
    facts = data.facts
    assert facts["files"] == 37 and facts["malformed_names"] == 3
    assert facts["duplicate_groups"] == 2 and facts["surplus_files"] == 2
    assert facts["conflicting_groups"] == 1 and facts["dropped_for_conflicts"] == 2
    assert facts["after_cleaning"] == 31 == len(data.table)
    assert data.table.class_names == AGE_NAMES and data.partitions == ["class", "gender", "race"]
    meta = data.table.metadata(np.arange(len(data.table)))
    by_name = dict(zip([p.name for p in data.table.paths], meta.itertuples()))
    row = by_name["59_1_2_2017011000000007.jpg.chip.jpg"]
    assert (row.label, row._3, row.gender, row.race) == (3, "40-59", "female", "asian")
    kept = {p.name for p in data.table.paths}
    assert "25_0_2_20170101000000001.jpg.chip.jpg" in kept and "25_0_2_20170101000000002.jpg.chip.jpg" not in kept
    assert not any(name.startswith("30_") for name in kept)
    assert data.table[0][0].shape == (3, 8, 8)
    split = data.facts["split"]
    assert split == {"train": 21, "val": 3, "test": 7}      # ceil(0.2·31) = 7; ceil(0.1·24) = 3
    # the seeded test set is marked on the table, and the split keeps exactly it
    assert data.table.is_test is not None and data.table.is_test.sum() == 7
    np.testing.assert_array_equal(np.flatnonzero(data.table.is_test), data.test_indices)


def test_utkface_keep_first_policy_keeps_one_of_a_conflicting_group(utkface):
    data = UTKFaceDataModule(root=str(utkface), normalization=NORM, on_conflict="keep_first")
    data.setup()
    kept = {p.name for p in data.table.paths}
    assert "30_0_1_20170101000000003.jpg.chip.jpg" in kept and len(kept) == 32


def test_utkface_split_ignores_the_file_listing_order(utkface, monkeypatch):
    def test_names():
        data = UTKFaceDataModule(root=str(utkface), normalization=NORM)
        data.setup()
        return sorted(data.table.paths[i].name for i in data.test_indices)

    reference = test_names()
    listing = Path.iterdir

    def shuffled(self):
        entries = list(listing(self))
        random.Random(7).shuffle(entries)
        return iter(entries)

    monkeypatch.setattr(Path, "iterdir", shuffled)
    assert test_names() == reference


def test_utkface_resize_and_cache(utkface):
    data = UTKFaceDataModule(root=str(utkface), normalization=NORM, image_size=4, cache=True)
    data.setup()
    first = data.table[3][0]
    assert first.shape == (3, 4, 4) and 0 <= first.min() and first.max() <= 1
    assert data.table._decoded is not None and data.table._decoded.dtype.is_floating_point is False


def test_a_sweep_decodes_its_images_once_and_again_when_a_file_changes(utkface, monkeypatch):
    """The next job of a sweep (the same process) reuses the decoding pass of the files as they were; a file
    rewritten since, or another image size, is decoded anew."""
    from robustness_bias.data.files import FileImages
    passes = []
    decode_all = FileImages._decode_all
    monkeypatch.setattr(FileImages, "_decode_all", lambda table: passes.append(1) or decode_all(table))

    def pixels(image_size=4):
        data = UTKFaceDataModule(root=str(utkface), normalization=NORM, image_size=image_size, cache=True)
        data.setup()
        return data.table[3][0]

    first = pixels()
    assert len(passes) == 1 and pixels().equal(first) and len(passes) == 1
    assert pixels(image_size=5).shape == (3, 5, 5) and len(passes) == 2
    pixels()
    assert len(passes) == 3   # one pass is kept at a time
    source = sorted(utkface.glob("*.jpg"))[5]
    source.write_bytes(jpeg_bytes(999, size=9))   # rewritten in place: another size
    pixels()
    assert len(passes) == 4


def test_utkface_missing_folder_says_what_to_do(tmp_path):
    with pytest.raises(DataError, match=r"UTKFace.tar.gz.*Fix: pass dataset.root="):
        UTKFaceDataModule(root=str(tmp_path / "nowhere"), normalization=NORM)
    with pytest.raises(DataError, match=r"^dataset\.root is not set\. .*UTKFace.tar.gz.*Fix: pass dataset.root="):
        UTKFaceDataModule(root=None, normalization=NORM)


FOLD_HEADER = "user_id\toriginal_image\tface_id\tage\tgender\tx\ty\tdx\tdy\ttilt_ang\tfiducial_yaw_angle\tfiducial_score"


def write_adience(root: Path) -> None:
    """Five fold files with official and stray ages, unknown genders and faces without an age."""
    ages = ["(0, 2)", "(4, 6)", "(8, 12)", "(15, 20)", "(25, 32)", "(38, 43)", "(48, 53)", "(60, 100)",
            "(38, 42)", "35", "(8, 23)", "None"]
    genders = ["m", "f", "u", "f", "m", "", "f", "m", "f", "m", "f", "m"]
    face = 0
    for fold in range(5):
        lines = [FOLD_HEADER]
        for k in range(len(ages)):
            if fold != 4 and (k + fold) % 3 == 0:     # training folds hold 8 of the 12 kinds, fold 4 all
                continue
            user = f"user{fold}"
            image = f"img{face}.jpg"
            folder = root / "aligned" / user
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"landmark_aligned_face.{face}.{image}").write_bytes(jpeg_bytes(face, size=12))
            lines.append(f"{user}\t{image}\t{face}\t{ages[k]}\t{genders[k]}\t0\t0\t10\t10\t0\t0\t50")
            face += 1
        (root / f"fold_{fold}_data.txt").write_text("\n".join(lines) + "\n")


def test_adience_stray_ages_map_to_the_nearest_group():
    assert [ADIENCE_AGES[age_group(s)] for s in ["(0, 2)", "(8, 12)", "(60, 100)", "(38, 42)", "35", "(8, 23)",
                                                   "(38, 48)", "(27, 32)", "3", "13", "57", "58", "22"]] == \
        ["0-2", "8-13", "60+", "38-43", "38-43", "15-20", "38-43", "25-32", "4-6", "8-13", "60+", "60+", "15-20"]
    assert age_group("None") is None and age_group("") is None


def test_adience_official_ages_are_the_fold_files_strings_of_the_eight_groups():
    assert OFFICIAL_AGES == ("(0, 2)", "(4, 6)", "(8, 12)", "(15, 20)", "(25, 32)", "(38, 43)", "(48, 53)", "(60, 100)")
    assert [age_group(s) for s in OFFICIAL_AGES] == list(range(len(ADIENCE_AGES)))


def test_adience_folds_labels_and_attributes(tmp_path):
    root = tmp_path / "adience"
    write_adience(root)
    data = AdienceDataModule(root=str(root), image_size=6, normalization=NORM, val_fraction=0.25)
    data.setup()
    rows = pd.concat(pd.read_csv(root / f"fold_{k}_data.txt", sep="\t", dtype=str, keep_default_na=False)
                     .assign(fold=k) for k in range(5))
    assert data.facts["rows"] == len(rows) and data.facts["without_age"] == (rows["age"] == "None").sum()
    assert set(data.facts["stray_ages"]) == {"(38, 42)", "35", "(8, 23)"}     # "(8, 12)" is official
    usable = rows[rows["age"] != "None"]
    assert len(data.table) == len(usable)
    test_users = {data.table.paths[i].parent.name for i in data.test_indices}
    assert test_users == {"user4"} and len(data.test_indices) == (usable["fold"] == 4).sum()
    np.testing.assert_array_equal(np.flatnonzero(data.table.is_test), data.test_indices)
    n_train = (usable["fold"] != 4).sum()
    assert len(data.val_indices) == int(np.ceil(0.25 * n_train)) and len(data.train_indices) + len(data.val_indices) == n_train
    assert data.table.class_names == ADIENCE_AGES and data.partitions == ["class", "gender"]
    meta = data.table.metadata(data.test_indices)
    assert set(meta["gender"]) <= {"male", "female", "unknown"} and (meta["gender"] == "unknown").any()
    assert data.table[0][0].shape == (3, 6, 6)


def test_adience_can_drop_unknown_gender(tmp_path):
    root = tmp_path / "adience"
    write_adience(root)
    data = AdienceDataModule(root=str(root), image_size=6, normalization=NORM, drop_unknown_gender=True)
    data.setup()
    assert data.table.categories["gender"] == ["male", "female"]


def test_adience_missing_fold_file_is_named(tmp_path):
    root = tmp_path / "adience"
    write_adience(root)
    (root / "fold_3_data.txt").unlink()
    with pytest.raises(DataError, match=r"fold_3_data\.txt.*Fix: pass dataset.root="):
        AdienceDataModule(root=str(root), normalization=NORM)


def test_adience_missing_folder_says_what_to_do(tmp_path):
    with pytest.raises(DataError, match=r"no such folder\. .*fold_0_data\.txt.*aligned/.*Fix: pass dataset.root="):
        AdienceDataModule(root=str(tmp_path / "nowhere"), normalization=NORM)
    with pytest.raises(DataError, match=r"^dataset\.root is not set\. .*fold_0_data\.txt.*Fix: pass dataset.root="):
        AdienceDataModule(root=None, normalization=NORM)
