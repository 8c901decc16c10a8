"""labels.csv of the image_folder dataset: confined to its folder, validated, and read into one-line errors."""

import logging
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from robustness_bias.data import DataError, ImageFolderDataModule
from robustness_bias.config.rules import ConfigError
from robustness_bias.pipeline import run

NORM = {"mean": [0.5] * 3, "std": [0.5] * 3}
HEADER = "path,label,site\n"


@pytest.fixture
def root(tmp_path):
    """20 images of 6×6 pixels, img/00.png … img/19.png, and a secret file beside the folder."""
    folder = tmp_path / "images"
    (folder / "img").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(20):
        Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(folder / "img" / f"{i:02d}.png")
    Image.fromarray(np.zeros((6, 6, 3), dtype=np.uint8)).save(tmp_path / "secret.png")
    return folder


def rows(n=20) -> str:
    return "".join(f"img/{i:02d}.png,{['cat', 'dog'][i % 2]},{['north', 'south'][i % 3 == 0]}\n" for i in range(n))


def load(root, text=None, data: bytes | None = None, **options):
    csv = root / "labels.csv"
    csv.write_bytes(data if data is not None else text.encode())
    module = ImageFolderDataModule(root=str(root), normalization=NORM, **options)
    module.setup()
    return module


def one_line_error(root, match, **kwargs):
    with pytest.raises(DataError, match=match) as error:
        load(root, **kwargs)
    assert "\n" not in str(error.value) and "Fix: " in str(error.value)


@pytest.mark.parametrize("path", ["../secret.png", "img/../../secret.png", "{tmp}/secret.png", "link.png"],
                         ids=["dotdot", "dotdot-inside", "absolute", "symlink"])
def test_paths_that_lead_outside_the_folder_are_refused(root, path):
    os.symlink(root.parent / "secret.png", root / "link.png")
    path = path.format(tmp=root.parent)
    one_line_error(root, rf"names files outside dataset\.root={root} on line\(s\) 22: '{path}'",
                   text=HEADER + rows() + f"{path},cat,north\n")


def test_a_symlink_and_dotdot_that_stay_inside_are_fine(root):
    os.symlink(root / "img" / "19.png", root / "alias.png")
    data = load(root, HEADER + rows(18) + "alias.png,dog,north\nimg/../img/18.png,cat,south\n")
    assert len(data.table) == 20


def test_duplicate_rows_are_refused_even_when_spelled_differently(root):
    one_line_error(root, r"lists the same image more than once, on line\(s\) 2, 22 \(\./img/00\.png, img/00\.png\)",
                   text=HEADER + rows() + "./img/00.png,cat,north\n")


@pytest.mark.parametrize(("line", "named"), [("img/00.png,,north", r"label on line\(s\) 2"),
                                             ("img/00.png,cat,", r"site on line\(s\) 2"),
                                             ("img/00.png,cat, ", r"site on line\(s\) 2")])
def test_empty_labels_and_attribute_values_name_their_lines(root, line, named):
    one_line_error(root, rf"has empty cells: {named}\. Fix", text=HEADER + line + "\n" + rows()[len("img/00.png,cat,south\n"):])


@pytest.mark.parametrize(("content", "message"), [
    (b"", r"labels\.csv is empty\."),
    (b"path,label,site\n", r"has a header but no images\."),
    (b"path,label,site\n\n\n", r"has a header but no images\."),
    ("path,label,site\nimg/00.png,caf\u00e9,north\n".encode("latin-1"), r"is not UTF-8 text \(byte 0xe9"),
    (b"path,label,site\nimg/00.png,cat,north,extra\nimg/01.png,dog,south\n",
     r"is not a well-formed CSV \(Error tokenizing data\. C error: Expected 3 fields in line 2, saw 4\)"),
    (b"path,label,site\nimg/00.png,cat\n", r"has empty cells: site on line\(s\) 2\."),
    (b"path,label,path\nimg/00.png,cat,img/01.png\n", r"an empty or repeated column name"),
    (b"file,class\nimg/00.png,cat\n", r"lacks the column\(s\) \['label', 'path'\]"),
], ids=["empty", "header-only", "header-and-blank-lines", "latin-1", "extra-cell", "missing-cell", "repeated-column",
       "no-path-column"])
def test_unreadable_csvs_are_one_line_errors(root, content, message):
    one_line_error(root, message, data=content)


def test_blank_lines_are_skipped_and_a_utf8_bom_is_fine(root):
    data = load(root, data=b"\xef\xbb\xbf" + (HEADER + rows(10) + "\n" + rows()[len(rows(10)):]).encode())
    assert len(data.table) == 20 and data.table.attributes.keys() == {"site"}


def test_a_class_too_small_for_the_split_is_named(root, caplog):
    with caplog.at_level(logging.WARNING, logger="robustness_bias.data.base"):
        load(root, HEADER + rows(19) + "img/19.png,bird,north\n")
    assert "1 class(es) have no training or no test image after the split: bird (" in caplog.text


def test_a_csv_of_one_label_is_refused_before_any_image_is_decoded(make_config, tmp_path, root, monkeypatch):
    """DeepFool used to fail after the whole training: a model of one class has no other class to step toward."""
    (root / "labels.csv").write_text(HEADER + rows().replace(",dog,", ",cat,"))
    decoded = []
    monkeypatch.setattr(Image, "open", lambda *a, **k: decoded.append(a) or pytest.fail("an image was decoded"))
    with pytest.raises(DataError, match=rf"^{root / 'labels.csv'}: every image has the label 'cat', and a classifier of "
                                        r"one class has no boundary to measure a distance to\. Fix: add images of at "
                                        r"least one other class to the CSV$"):
        run(make_config("dataset=image_folder", f"dataset.root={root}", "logger=none", "estimator=[deepfool]"))
    assert not decoded and not (tmp_path / "checkpoints").exists()


def test_images_of_mixed_sizes_fail_while_decoding_before_training(make_config, tmp_path, root):
    Image.fromarray(np.zeros((9, 7, 3), dtype=np.uint8)).save(root / "img" / "05.png")
    (root / "labels.csv").write_text(HEADER + rows())
    with pytest.raises(DataError, match=r"img/05\.png is \(3, 9, 7\) \(channels, height, width\) but .*img/00\.png is "
                                        r"\(3, 6, 6\): the images differ in size\. Fix: set dataset\.image_size=N"):
        run(make_config("dataset=image_folder", f"dataset.root={root}", "logger=none", "estimator=[exact]"))
    assert not (tmp_path / "checkpoints").exists()
    assert load(root, HEADER + rows(), image_size=6).input_shape == (3, 6, 6)


# ---------------------------------------------------------------- the CSV's own split, and the attributes it names


def split_rows(splits) -> str:
    """rows() with a split column: image i gets splits(i)."""
    return "".join(f"img/{i:02d}.png,{['cat', 'dog'][i % 2]},{splits(i)},{['north', 'south'][i % 3 == 0]},"
                   f"batch{i % 4}\n" for i in range(20))


def paths_of(data, indices) -> list[str]:
    return [data.table.source(int(i)).rsplit("/", 2)[-1] for i in indices]


def test_a_split_column_is_kept_as_it_is(root):
    splits = {**dict.fromkeys(range(14), "train"), 14: "val", 15: " Val", 16: "val", 17: "test", 18: "TEST", 19: "test"}
    data = load(root, "path,label,split,site,origin\n" + split_rows(splits.get))
    assert paths_of(data, data.train_indices) == [f"{i:02d}.png" for i in range(14)]
    assert paths_of(data, data.val_indices) == ["14.png", "15.png", "16.png"]
    assert paths_of(data, data.test_indices) == ["17.png", "18.png", "19.png"]
    assert data.facts["split"] == {"train": 14, "val": 3, "test": 3}
    assert data.facts["split_from"] == "the CSV's split column"
    assert set(data.table.attributes) == {"site", "origin"} and "split" not in data.partitions


def test_without_val_rows_a_seeded_share_of_the_train_rows_validates(root):
    data = load(root, "path,label,split,site,origin\n" + split_rows(lambda i: "test" if i >= 15 else "train"),
                val_fraction=0.2)
    assert paths_of(data, data.test_indices) == [f"{i}.png" for i in range(15, 20)]
    assert len(data.val_indices) == 3 and len(data.train_indices) == 12   # ⌈0.2 · 15⌉ of the 15 train rows
    assert set(paths_of(data, data.val_indices)) < {f"{i:02d}.png" for i in range(15)}
    again = load(root, "path,label,split,site,origin\n" + split_rows(lambda i: "test" if i >= 15 else "train"),
                 val_fraction=0.2)
    assert list(again.val_indices) == list(data.val_indices)


def test_without_a_split_column_the_split_is_random_and_says_so(root):
    data = load(root, HEADER + rows())
    assert data.facts["split"] == {"train": 14, "val": 2, "test": 4}   # ⌈0.2 · 20⌉ test, ⌈0.1 · 20⌉ val
    assert data.facts["split_from"] == "random: test_fraction=0.2, val_fraction=0.1, split_seed=42"


@pytest.mark.parametrize(("splits", "message"), [
    (lambda i: "holdout" if i in (3, 7) else "train" if i < 15 else "test",
     r"the split column holds \['holdout'\] on line\(s\) 5, 9\. Fix: write train, val or test there"),
    (lambda i: "train" if i < 15 else "val", r"the split column has no test row\. Fix"),
    (lambda i: "test", r"the split column has no train row\. Fix")])
def test_a_split_column_with_other_values_or_no_test_row_is_refused(root, splits, message):
    one_line_error(root, message, text="path,label,split,site,origin\n" + split_rows(splits))


def test_named_attributes_are_the_only_partitions(root):
    text = "path,label,split,site,origin\n" + split_rows(lambda i: "test" if i >= 15 else "train")
    text = text.replace("batch3\n", "\n")   # the ignored column may have gaps
    data = load(root, text, attributes=["site"])
    assert data.partitions == ["class", "site"] and data.table.categories["site"] == ["north", "south"]
    assert data.test_metadata().columns.tolist() == ["sample_index", "label", "class", "site"]
    with pytest.raises(DataError, match="has empty cells: origin"):
        load(root, text)   # with every column audited, the gap is a missing value


@pytest.mark.parametrize(("named", "message"), [
    (["site", "camera"], r"dataset\.attributes names \['camera'\], but the attribute columns of .*labels\.csv are "
                         r"\['site', 'origin'\]\. Fix: pass dataset\.attributes=\[site\]"),
    (["split"], r"names \['split'\] \(split cannot be an attribute\)")])
def test_attributes_that_are_not_columns_are_refused(root, named, message):
    one_line_error(root, message, text="path,label,split,site,origin\n" + split_rows(lambda i: "test" if i > 15 else "train"),
                   attributes=named)


def test_the_command_line_audits_the_named_attribute_on_the_csvs_test_set(make_config, tmp_path, root):
    (root / "labels.csv").write_text("path,label,split,site,origin\n" + split_rows(lambda i: "test" if i >= 12 else "train"))
    run(make_config("dataset=image_folder", f"dataset.root={root}", "dataset.attributes=[site]", "logger=none",
                    "trainer.max_epochs=1", "estimator=[exact]", "+partition.by=[site]"))
    records = pd.read_parquet(tmp_path / "audits" / "final" / "records.parquet")
    assert sorted(records["sample_index"]) == list(range(12, 20)) and "origin" not in records.columns
    summary = pd.read_parquet(tmp_path / "audits" / "final" / "summary.parquet")
    assert set(summary["partition"]) == {"class", "site"}


@pytest.fixture
def bomb(root):
    """img/bomb.png: a real 9000×9000 PNG of one colour, a few kB on disk but 81 megapixels decoded."""
    Image.new("1", (9000, 9000)).save(root / "img" / "bomb.png")   # 1 bit a pixel: 10 MB while written
    return root / "img" / "bomb.png"


@pytest.mark.parametrize("cache", [False, True])
def test_an_image_over_the_pixel_budget_is_refused_before_it_is_decoded(root, bomb, monkeypatch, cache):
    assert bomb.stat().st_size < 100_000
    decoded, convert = [], Image.Image.convert
    monkeypatch.setattr(Image.Image, "convert", lambda img, *a, **k: decoded.append(img.size) or convert(img, *a, **k))
    one_line_error(root, rf"^{bomb} is 9000×9000 = 81,000,000 pixels, over dataset\.max_image_pixels=1000000 .*"
                         r"Fix: remove the file, or if it is a real image pass dataset\.max_image_pixels=81000000$",
                   text=HEADER + rows() + "img/bomb.png,cat,north\n", max_image_pixels=1_000_000, cache=cache)
    assert (9000, 9000) not in decoded and decoded   # the small images were decoded, the bomb never


def test_the_pixel_budget_is_a_checked_setting(make_config, root):
    (root / "labels.csv").write_text(HEADER + rows())
    with pytest.raises(ConfigError, match=r"dataset\.max_image_pixels=0: must be a whole number ≥ 1\. "
                                          r"Fix: pass dataset\.max_image_pixels=40000000"):
        run(make_config("dataset=image_folder", f"dataset.root={root}", "dataset.max_image_pixels=0",
                        "logger=none", "model=logreg", "estimator=[exact]", "trainer.max_epochs=1"))


def test_an_image_beyond_pils_own_limit_is_one_line_too(root, bomb, monkeypatch):
    """PIL refuses more than twice ``Image.MAX_IMAGE_PIXELS`` when it opens a file, whatever the budget."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000_000)
    one_line_error(root, rf"^{bomb}: Image size \(81000000 pixels\) exceeds limit .* Fix: remove or replace the file$",
                   text=HEADER + rows() + "img/bomb.png,cat,north\n", max_image_pixels=100_000_000)
