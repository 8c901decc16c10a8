"""Group-balanced training (dataset.balance_by), the mitigation's baseline: the sampler's shares, its seeding,
its DDP shares, the data module's batches on a UTKFace fixture, and the fingerprint."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from robustness_bias.config.data import Normalization, UTKFaceData
from robustness_bias.config.fingerprint import shaping
from robustness_bias.config.rules import ConfigError
from robustness_bias.data import UTKFaceDataModule
from robustness_bias.data.sampling import GroupBalancedSampler
from test_face_datasets import NORM, jpeg_bytes

# 80% of group 0, 15% of group 1, 5% of group 2
GROUPS = np.repeat([0, 1, 2], [1600, 300, 100])


def test_the_sampler_draws_every_group_equally_often():
    sampler = GroupBalancedSampler(GROUPS, seed=3)
    drawn = np.array(list(sampler))
    assert len(drawn) == len(sampler) == len(GROUPS)   # an epoch costs what a plain one does
    shares = np.bincount(GROUPS[drawn], minlength=3) / len(drawn)
    np.testing.assert_allclose(shares, 1 / 3, atol=0.03)   # a plain shuffle gives 0.80, 0.15, 0.05
    assert len(set(drawn[GROUPS[drawn] == 2])) > 90   # the small group's images repeat, and nearly all are drawn


def test_the_sampler_is_seeded_per_epoch_and_alike_on_every_rank():
    first, again = GroupBalancedSampler(GROUPS, seed=3), GroupBalancedSampler(GROUPS, seed=3)
    assert list(first) == list(again)
    first.set_epoch(1)
    assert list(first) != list(again)
    ranks = [GroupBalancedSampler(GROUPS, seed=3, num_replicas=3, rank=r) for r in range(3)]
    shares = [list(s) for s in ranks]
    assert [len(s) for s in shares] == [667] * 3 == [len(s) for s in ranks]
    whole = torch.multinomial(ranks[0].weights, 2001, replacement=True, generator=torch.Generator().manual_seed(3))
    assert [i for triple in zip(*shares) for i in triple] == whole.tolist()   # one draw, dealt out across ranks
    assert isinstance(ranks[0], torch.utils.data.DistributedSampler)   # so Lightning does not wrap it


def write_imbalanced_utkface(root):
    """90 faces: 70 white, 15 black, 5 asian; ages spread over the five bins."""
    root.mkdir(parents=True)
    races = [0] * 70 + [1] * 15 + [2] * 5
    for i, race in enumerate(races):
        (root / f"{[5, 20, 30, 50, 70][i % 5]}_{i % 2}_{race}_2017011{i:09d}.jpg.chip.jpg").write_bytes(jpeg_bytes(i))


def test_balanced_batches_on_a_utkface_fixture(tmp_path):
    write_imbalanced_utkface(tmp_path / "UTKFace")
    torch.manual_seed(0)
    data = UTKFaceDataModule(root=str(tmp_path / "UTKFace"), normalization=NORM, batch_size=16, balance_by="race",
                             val_fraction=0.0, test_fraction=0.1)
    data.setup()
    assert data.facts["balanced_by"] == {"attribute": "race", "white": 64, "black": 14, "asian": 3}
    races, column = [], list(data.table.attributes).index("race")
    for epoch in range(30):
        loader = data.train_dataloader()
        loader.sampler.set_epoch(epoch)
        races += [attributes[:, column] for _, _, attributes in loader]
    races = torch.cat(races).numpy()
    shares = np.bincount(races, minlength=5)[:3] / len(races)
    np.testing.assert_allclose(shares, 1 / 3, atol=0.03)   # the training split holds 79% white
    plain = UTKFaceDataModule(root=str(tmp_path / "UTKFace"), normalization=NORM, batch_size=16, val_fraction=0.0,
                              test_fraction=0.1)
    plain.setup()
    white = np.mean([a[:, column].eq(0).float().mean().item() for _, _, a in plain.train_dataloader()])
    assert white > 0.7


def test_balance_by_names_what_the_dataset_has(tmp_path):
    write_imbalanced_utkface(tmp_path / "UTKFace")
    data = UTKFaceDataModule(root=str(tmp_path / "UTKFace"), normalization=NORM, balance_by="religion")
    with pytest.raises(ConfigError, match=r"dataset.balance_by=religion: .*Fix: choose among \['class', 'gender', 'race'\]"):
        data.setup()
    by_age = UTKFaceDataModule(root=str(tmp_path / "UTKFace"), normalization=NORM, balance_by="class")
    by_age.setup()
    assert sorted(by_age.facts["balanced_by"]) == sorted(["attribute", "0-14", "15-24", "25-39", "40-59", "60+"])


def test_balance_by_is_in_the_fingerprint_only_when_set():
    plain = OmegaConf.structured(UTKFaceData(_target_="x", normalization=Normalization([0.0], [1.0])))
    assert "balance_by" not in shaping(plain)   # jobs run before the setting keep their fingerprints
    balanced = plain.copy()
    balanced.balance_by = "race"
    assert shaping(balanced)["balance_by"] == "race" and shaping(balanced) != shaping(plain)
