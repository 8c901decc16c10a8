"""Image files that cannot be decoded: left out and listed (dataset.on_bad_file=skip), or fatal (raise)."""

import json

import numpy as np
import pytest
from PIL import Image
from test_face_datasets import NORM, jpeg_bytes, write_utkface

from robustness_bias.config.rules import ConfigError
from robustness_bias.data import DataError, ImageTable, UTKFaceDataModule
from robustness_bias.pipeline import run

TRUNCATED = "33_1_3_20170101000000010.jpg.chip.jpg"
EMPTY = "45_0_4_20170101000000011.jpg.chip.jpg"
EMPTY_TWIN = "50_1_0_20170101000000012.jpg.chip.jpg"     # empty too: no duplicate of the other


def write_bad_files(root):
    (root / TRUNCATED).write_bytes(jpeg_bytes(300)[:-50])      # PIL: "image file is truncated"
    (root / EMPTY).write_bytes(b"")
    (root / EMPTY_TWIN).write_bytes(b"")


@pytest.fixture
def utkface(tmp_path):
    """The UTKFace fixture of test_face_datasets (31 usable faces) plus a truncated and two empty files."""
    root = tmp_path / "UTKFace"
    write_utkface(root)
    write_bad_files(root)
    return root


def names(data, indices):
    return {data.table.paths[i].name for i in indices}


def test_bad_files_are_left_out_and_listed(utkface):
    data = UTKFaceDataModule(root=str(utkface), normalization=NORM)
    data.setup()
    listed = data.facts["bad_files"]
    assert data.facts["bad_file_count"] == 3 and [entry["path"] for entry in listed] == \
        sorted(str(utkface / name) for name in (TRUNCATED, EMPTY, EMPTY_TWIN))
    reasons = {entry["path"].rsplit("/", 1)[-1]: entry["reason"] for entry in listed}
    assert "truncated" in reasons[TRUNCATED] and "cannot identify image file" in reasons[EMPTY]
    assert data.facts["duplicate_groups"] == 2       # the two empty files are not a duplicate pair
    used = [data.train_indices, data.val_indices, data.test_indices]
    assert not names(data, np.concatenate(used)) & {TRUNCATED, EMPTY, EMPTY_TWIN}
    assert sum(map(len, used)) + 3 == data.facts["after_cleaning"] == len(data.table) == 34
    assert data.input_shape == (3, 8, 8)


def test_a_bad_file_does_not_reshuffle_the_split(utkface):
    broken = UTKFaceDataModule(root=str(utkface), normalization=NORM)
    broken.setup()
    for i, name in enumerate((TRUNCATED, EMPTY, EMPTY_TWIN)):
        (utkface / name).write_bytes(jpeg_bytes(400 + i))
    repaired = UTKFaceDataModule(root=str(utkface), normalization=NORM)
    repaired.setup()
    assert repaired.facts["bad_file_count"] == 0
    bad = {TRUNCATED, EMPTY, EMPTY_TWIN}
    for part in ("train_indices", "val_indices", "test_indices"):
        assert names(broken, getattr(broken, part)) == names(repaired, getattr(repaired, part)) - bad


def test_raise_names_the_bad_files_and_the_fix(utkface):
    data = UTKFaceDataModule(root=str(utkface), normalization=NORM, on_bad_file="raise")
    with pytest.raises(DataError, match=rf"3 image file\(s\) cannot be decoded: .*{TRUNCATED} \(OSError: image file is "
                                        rf"truncated.*{EMPTY}.*{EMPTY_TWIN}.*Fix: .*dataset\.on_bad_file=skip"):
        data.setup()


def test_unknown_policy_names_the_setting(utkface):
    """A data module made in Python checks its settings by the command line's rules (config/data.py)."""
    with pytest.raises(ConfigError, match=r"dataset\.on_bad_file=ignore.*Fix: pass dataset\.on_bad_file=skip"):
        UTKFaceDataModule(root=str(utkface), normalization=NORM, on_bad_file="ignore")


def test_every_image_is_decoded_once_and_cached(utkface, monkeypatch):
    data = UTKFaceDataModule(root=str(utkface), normalization=NORM, cache=True)
    opened = []
    original = Image.open
    monkeypatch.setattr(Image, "open", lambda path, *args: opened.append(path) or original(path, *args))
    data.setup()
    for batch in data.train_dataloader():
        assert batch[0].shape[1:] == (3, 8, 8)
    assert data.table.unreadable() is data.table.unreadable()
    assert len(opened) == len(data.table) == len(set(opened))
    with pytest.raises(DataError, match=rf"cannot decode image .*{EMPTY}"):
        data.table[data.table.paths.index(utkface / EMPTY)]


def test_cache_still_needs_images_of_one_size(utkface):
    (utkface / "20_0_0_20170101000000013.jpg.chip.jpg").write_bytes(jpeg_bytes(500, size=12))
    data = UTKFaceDataModule(root=str(utkface), normalization=NORM, cache=True)
    with pytest.raises(DataError, match=r"20_0_0_20170101000000013.* is \(3, 12, 12\) .*Fix: set dataset\.image_size"):
        data.setup()


def test_no_readable_training_image_is_an_error(tmp_path):
    root = tmp_path / "UTKFace"
    root.mkdir()
    write_bad_files(root)
    with pytest.raises(DataError, match=r"3 of 3 images cannot be decoded.*Fix: remove or replace"):
        UTKFaceDataModule(root=str(root), normalization=NORM).setup()


def test_labels_outside_the_classes_are_counted_and_shown():
    with pytest.raises(DataError, match=r"2 sample\(s\) have a label outside 0\.\.2 .*e\.g\. sample 2 with label 5\. "
                                        r"Fix: give every sample a label in 0\.\.2"):
        ImageTable(np.array([0, 1, 5, -1]), ["a", "b", "c"])


def test_a_run_lists_the_bad_files_in_its_outputs(make_config, tmp_path, utkface):
    result = run(make_config("dataset=utkface", f"dataset.root={utkface}", "model=logreg", "estimator=[exact]",
                             "trainer.max_epochs=1", "logger=none", "dataset.batch_size=8"))
    expected = sorted(str(utkface / name) for name in (TRUNCATED, EMPTY, EMPTY_TWIN))
    dataset = json.loads((tmp_path / "dataset.json").read_text())
    stored = json.loads((tmp_path / "result.json").read_text())
    assert dataset["bad_file_count"] == 3 and [entry["path"] for entry in dataset["bad_files"]] == expected
    assert [entry["path"] for entry in stored["bad_files"]] == expected
    assert result["bad_files"] == stored["bad_files"]


def test_raise_from_the_command_line_settings_stops_before_training(make_config, tmp_path, utkface):
    with pytest.raises(DataError, match=TRUNCATED):
        run(make_config("dataset=utkface", f"dataset.root={utkface}", "model=logreg", "estimator=[exact]",
                        "logger=none", "dataset.on_bad_file=raise"))
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "audits").exists()
