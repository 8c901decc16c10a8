"""CIFAR-10, CIFAR-100 and CIFAR-100 super-classes on tiny fixtures in the official pickle layout."""

import builtins
import math
import os
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate

from conftest import compose_config
from robustness_bias.data import DataError
from robustness_bias.data.cifar import CIFAR10DataModule, CIFAR100DataModule, CIFAR100SuperDataModule
from robustness_bias.pipeline import run

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR10_NORMALIZATION = {"mean": [0.5] * 3, "std": [0.5] * 3}
CIFAR100_NORMALIZATION = {"mean": [0.5071, 0.4865, 0.4409], "std": [0.2673, 0.2564, 0.2762]}

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
COARSE_NAMES = ["aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
                "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
                "large_man-made_outdoor_things", "large_natural_outdoor_scenes", "large_omnivores_and_herbivores",
                "medium_mammals", "non-insect_invertebrates", "people", "reptiles", "small_mammals", "trees",
                "vehicles_1", "vehicles_2"]
FINE_NAMES = [f"{coarse}_{k}" for coarse in COARSE_NAMES for k in range(5)]   # fine label f lies in coarse f // 5

CIFAR10_TRAIN_IDS, CIFAR10_TEST_IDS = np.arange(20), np.arange(20, 26)
CIFAR10_TRAIN_LABELS, CIFAR10_TEST_LABELS = CIFAR10_TRAIN_IDS % 10, (CIFAR10_TEST_IDS * 3) % 10
CIFAR100_TRAIN_IDS, CIFAR100_TEST_IDS = np.arange(12), np.arange(12, 18)
CIFAR100_FINE = np.concatenate([(CIFAR100_TRAIN_IDS * 7) % 100, (CIFAR100_TEST_IDS * 13) % 100])


def expected_image(image_id: int) -> torch.Tensor:
    """Image ``image_id`` of the fixtures: red constant, green rising down the rows, blue along the columns."""
    image = torch.empty(3, 32, 32)
    image[0] = image_id
    image[1] = 100 + torch.arange(32.0)[:, None]
    image[2] = 150 + 3 * torch.arange(32.0)[None, :]
    return image / 255


def pixel_rows(ids: np.ndarray) -> np.ndarray:
    """The official row format: 1,024 red bytes, then green, then blue, each plane row by row."""
    rows = []
    for image_id in ids:
        red = np.full((32, 32), image_id)
        green = np.repeat(100 + np.arange(32)[:, None], 32, axis=1)
        blue = np.repeat(150 + 3 * np.arange(32)[None, :], 32, axis=0)
        rows.append(np.concatenate([red.ravel(), green.ravel(), blue.ravel()]))
    return np.asarray(rows, dtype=np.uint8)


def write_pickle(path, content: dict) -> None:
    """Protocol 2, numpy arrays named as CIFAR's Python 2-era files name them (numpy.core, not numpy 2's _core)."""
    data = pickle.dumps(content, protocol=2)
    path.write_bytes(data.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n"))


@pytest.fixture
def cifar_root(tmp_path):
    """A data root holding tiny CIFAR-10 (5 batches of 4 + 6 test) and CIFAR-100 (12 + 6) archives."""
    root = tmp_path / "data"
    cifar10 = root / "cifar-10-batches-py"
    cifar10.mkdir(parents=True)
    for batch in range(5):
        ids = CIFAR10_TRAIN_IDS[4 * batch:4 * batch + 4]
        write_pickle(cifar10 / f"data_batch_{batch + 1}",
                     {b"batch_label": f"training batch {batch + 1} of 5".encode(), b"data": pixel_rows(ids),
                      b"labels": CIFAR10_TRAIN_LABELS[ids].tolist(), b"filenames": [b"img_%d.png" % i for i in ids]})
    write_pickle(cifar10 / "test_batch",
                 {b"batch_label": b"testing batch 1 of 1", b"data": pixel_rows(CIFAR10_TEST_IDS),
                  b"labels": CIFAR10_TEST_LABELS.tolist(), b"filenames": [b"img_%d.png" % i for i in CIFAR10_TEST_IDS]})
    write_pickle(cifar10 / "batches.meta", {b"label_names": [n.encode() for n in CIFAR10_NAMES],
                                            b"num_cases_per_batch": 4, b"num_vis": 3072})

    cifar100 = root / "cifar-100-python"
    cifar100.mkdir()
    for name, ids in [("train", CIFAR100_TRAIN_IDS), ("test", CIFAR100_TEST_IDS)]:
        fine = CIFAR100_FINE[ids]
        write_pickle(cifar100 / name, {b"data": pixel_rows(ids), b"fine_labels": fine.tolist(),
                                       b"coarse_labels": (fine // 5).tolist(),
                                       b"filenames": [b"img_%d.png" % i for i in ids]})
    write_pickle(cifar100 / "meta", {b"fine_label_names": [n.encode() for n in FINE_NAMES],
                                     b"coarse_label_names": [n.encode() for n in COARSE_NAMES]})
    return root


def cifar10(root, **options):
    module = CIFAR10DataModule(root=str(root), normalization=CIFAR10_NORMALIZATION, **options)
    module.setup()
    return module


def test_cifar10_counts_labels_names_and_pixels(cifar_root):
    module = cifar10(cifar_root)
    table = module.table
    assert len(table) == 26 and module.num_classes == 10 and module.input_shape == (3, 32, 32)
    assert table.class_names == CIFAR10_NAMES
    np.testing.assert_array_equal(table.labels, np.concatenate([CIFAR10_TRAIN_LABELS, CIFAR10_TEST_LABELS]))
    assert table.pixels.dtype == torch.uint8
    for index in (0, 7, 19, 20, 25):
        image, label, attributes = table[index]
        assert image.dtype == torch.float32
        torch.testing.assert_close(image, expected_image(index), rtol=0, atol=1e-7)
        assert attributes.shape == (0,)
    assert module.partitions == ["class"]
    assert module.facts["images_read"] == {"train": 20, "test": 6}
    assert module.facts["split"] == {"train": 18, "val": 2, "test": 6}


def test_official_test_split_and_seeded_validation(cifar_root):
    module = cifar10(cifar_root, val_fraction=0.25)
    np.testing.assert_array_equal(module.table.is_test, np.isin(np.arange(26), CIFAR10_TEST_IDS))
    np.testing.assert_array_equal(module.test_indices, CIFAR10_TEST_IDS)
    assert len(module.val_indices) == math.ceil(0.25 * 20) == 5
    np.testing.assert_array_equal(np.sort(np.concatenate([module.train_indices, module.val_indices])),
                                  CIFAR10_TRAIN_IDS)
    assert list(module.test_metadata()["class"]) == [CIFAR10_NAMES[k] for k in CIFAR10_TEST_LABELS]

    again = cifar10(cifar_root, val_fraction=0.25)
    np.testing.assert_array_equal(again.val_indices, module.val_indices)
    reseeded = cifar10(cifar_root, val_fraction=0.25, split_seed=7)
    assert not np.array_equal(reseeded.val_indices, module.val_indices)
    np.testing.assert_array_equal(reseeded.test_indices, CIFAR10_TEST_IDS)


def test_image_size_resizes(cifar_root):
    module = cifar10(cifar_root, image_size=16)
    assert module.input_shape == (3, 16, 16)
    image = module.table.image(3)
    torch.testing.assert_close(image[0], torch.full((16, 16), 3 / 255))   # a constant plane stays constant
    assert 0 <= image.min() and image.max() <= 1


def test_cifar100_fine_classes_with_superclass_attribute(cifar_root):
    module = CIFAR100DataModule(root=str(cifar_root), normalization=CIFAR100_NORMALIZATION)
    module.setup()
    table = module.table
    assert len(table) == 18 and module.num_classes == 100 and table.class_names == FINE_NAMES
    np.testing.assert_array_equal(table.labels, CIFAR100_FINE)
    np.testing.assert_array_equal(table.attributes["superclass"], CIFAR100_FINE // 5)
    assert table.categories["superclass"] == COARSE_NAMES
    assert module.partitions == ["class", "superclass"]
    np.testing.assert_array_equal(module.test_indices, CIFAR100_TEST_IDS)
    torch.testing.assert_close(table[15][0], expected_image(15), rtol=0, atol=1e-7)
    assert int(table[15][2][0]) == CIFAR100_FINE[15] // 5
    assert module.facts["images_read"] == {"train": 12, "test": 6}
    metadata = module.test_metadata()
    assert list(metadata["superclass"]) == [COARSE_NAMES[f // 5] for f in CIFAR100_FINE[12:]]


def test_cifar100super_classes_are_the_coarse_labels(cifar_root):
    module = CIFAR100SuperDataModule(root=str(cifar_root), normalization=CIFAR100_NORMALIZATION)
    module.setup()
    table = module.table
    assert module.num_classes == 20 and table.class_names == COARSE_NAMES
    np.testing.assert_array_equal(table.labels, CIFAR100_FINE // 5)
    np.testing.assert_array_equal(table.attributes["fine_class"], CIFAR100_FINE)
    assert table.categories["fine_class"] == FINE_NAMES
    assert module.partitions == ["class", "fine_class"]
    metadata = module.test_metadata()
    assert list(metadata["class"]) == [COARSE_NAMES[f // 5] for f in CIFAR100_FINE[12:]]
    assert list(metadata["fine_class"]) == [FINE_NAMES[f] for f in CIFAR100_FINE[12:]]


@pytest.mark.parametrize(("module", "url", "folder"), [(CIFAR10DataModule, CIFAR10_URL, "cifar-10-batches-py"),
                                                       (CIFAR100DataModule, CIFAR100_URL, "cifar-100-python"),
                                                       (CIFAR100SuperDataModule, CIFAR100_URL, "cifar-100-python")])
def test_missing_folder_says_what_to_download_and_where(tmp_path, module, url, folder):
    with pytest.raises(DataError) as error:
        module(root=str(tmp_path / "nowhere"), normalization=CIFAR10_NORMALIZATION)
    message = str(error.value)
    assert url in message and f"{tmp_path / 'nowhere' / folder}/" in message
    assert "dataset.root=" in message and "dataset.download=true" in message and "Fix:" in message


@pytest.mark.parametrize("root", [None, ""])
def test_unset_root_says_what_belongs_there(root):
    with pytest.raises(DataError, match=r"^dataset\.root is not set\. .*cifar-10-batches-py/.*Fix: pass dataset\.root="):
        CIFAR10DataModule(root=root, normalization=CIFAR10_NORMALIZATION)


def test_missing_file_is_named(cifar_root):
    (cifar_root / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataError, match=r"cifar-10-batches-py/ lacks test_batch\. Fix: download"):
        CIFAR10DataModule(root=str(cifar_root), normalization=CIFAR10_NORMALIZATION)


def test_corrupt_pickle_names_the_file(cifar_root):
    damaged = cifar_root / "cifar-10-batches-py" / "data_batch_3"
    damaged.write_bytes(damaged.read_bytes()[:1000])
    module = CIFAR10DataModule(root=str(cifar_root), normalization=CIFAR10_NORMALIZATION)
    with pytest.raises(DataError, match=rf"{damaged} cannot be read .*truncated or corrupt"):
        module.setup()


class Payload:
    """Unpickling this calls ``function`` with ``argument``, which creates a file."""

    def __init__(self, function, argument):
        self.function, self.argument = function, argument

    def __reduce__(self):
        return self.function, (self.argument,)


@pytest.mark.parametrize(("function", "named"), [(os.system, r"posix\.system"),
                                                 (builtins.exec, r"(__builtin__|builtins)\.exec")])
def test_a_crafted_batch_is_refused_and_runs_nothing(cifar_root, tmp_path, function, named):
    marker = tmp_path / "MARKER"
    argument = f"touch {marker}" if function is os.system else f"open({str(marker)!r}, 'w').close()"
    crafted = cifar_root / "cifar-10-batches-py" / "data_batch_2"
    write_pickle(crafted, {b"data": pixel_rows(np.arange(4)), b"labels": [0, 1, 2, 3],
                           b"extra": Payload(function, argument)})
    module = CIFAR10DataModule(root=str(cifar_root), normalization=CIFAR10_NORMALIZATION)
    with pytest.raises(DataError, match=rf"^{crafted} is not a CIFAR-10 batch file: it asks to call {named}, .*"
                                        r"nothing in it ran\. Fix: delete .*cifar-10-batches-py/") as error:
        module.setup()
    assert "\n" not in str(error.value)
    assert not marker.exists()


def test_fixtures_hold_numpy_arrays_named_as_in_cifars_files(cifar_root):
    """The fixtures exercise what the restricted unpickler lets through: real CIFAR batches' numpy arrays."""
    raw = (cifar_root / "cifar-10-batches-py" / "test_batch").read_bytes()
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in raw and b"cnumpy\nndarray\n" in raw
    assert cifar10(cifar_root).table.pixels.shape == (26, 3, 32, 32)


def test_failed_download_explains_the_manual_fix(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", offline)
    with pytest.raises(DataError, match=r"dataset\.download=true: fetching .*cifar-100-python\.tar\.gz .*failed "
                                         r"\(OSError: no network\).*Fix: download"):
        CIFAR100DataModule(root=str(tmp_path), download=True, normalization=CIFAR100_NORMALIZATION)


def test_download_is_skipped_when_the_files_are_there(cifar_root, monkeypatch):
    import torchvision.datasets

    def unexpected(*args, **kwargs):
        raise AssertionError("downloaded although the files were present")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", unexpected)
    assert cifar10(cifar_root, download=True).num_classes == 10


@pytest.mark.parametrize(("name", "classes", "normalization"), [("cifar10", 10, CIFAR10_NORMALIZATION),
                                                                ("cifar100", 100, CIFAR100_NORMALIZATION),
                                                                ("cifar100super", 20, CIFAR100_NORMALIZATION)])
def test_configs_compose_and_load(cifar_root, name, classes, normalization):
    cfg = compose_config([f"dataset={name}", f"dataset.root={cifar_root}"])
    module = instantiate(cfg.dataset)
    module.setup()
    assert module.num_classes == classes and module.normalization == normalization
    assert module.batch_size == 128 and module.eval_batch_size == 512 and module.image_size is None
    assert len(module.val_indices) == math.ceil(0.1 * module.facts["images_read"]["train"])


def test_cifar10_trains_and_audits_end_to_end(make_config, tmp_path, cifar_root):
    result = run(make_config("dataset=cifar10", f"dataset.root={cifar_root}", "model=logreg", "estimator=[exact]",
                             "logger=none", "trainer.max_epochs=1", "dataset.val_fraction=0.25"))
    records = pd.read_parquet(tmp_path / "audits" / "final" / "records.parquet")
    assert len(records) == len(CIFAR10_TEST_IDS)
    assert set(records["class"]) <= set(CIFAR10_NAMES)
    assert 0 <= result["test_accuracy"] <= 1
