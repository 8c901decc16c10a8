"""The synthetic generator's known answers: the planted group's margin, and with strata a confounder that
alone sets the distance to the boundary, group tied to it, and group's direct effect only where planted."""

import numpy as np
import pytest
from conftest import config_problem

from robustness_bias.config.rules import ConfigError
from robustness_bias.data import SyntheticDataModule
from robustness_bias.data.synthetic import planted_bias_images

CONFOUNDED = dict(n_samples=4000, n_classes=2, shape=(1, 8, 8), separation=2.0, planted_share=0.3, seed=0,
                  stratum_margins=[1.0, 0.4], stratum_planted_shares=[0.2, 0.8])


def distances(images, labels):
    """Distance to a known linear classifier's boundary: the hyperplane through the grey image whose normal
    joins the two classes' mean images."""
    x = images.reshape(len(images), -1).double().numpy() - 0.5
    normal = x[labels == 1].mean(0) - x[labels == 0].mean(0)
    return np.abs(x @ normal) / np.linalg.norm(normal)


def by_cell(planted_margin):
    """Per (stratum, group): the distances of its samples, noise-free so that each is exact."""
    images, labels, planted, stratum = planted_bias_images(noise=0.0, planted_margin=planted_margin, **CONFOUNDED)
    d = distances(images, labels)
    return {(s, g): d[(stratum == s) & (planted == g)] for s in (0, 1) for g in (False, True)}, planted, stratum


def test_without_a_direct_effect_stratum_alone_sets_the_distance():
    cells, planted, stratum = by_cell(planted_margin=1.0)
    for s in (0, 1):   # within a stratum the groups' distances are the same numbers
        np.testing.assert_allclose(np.unique(cells[s, True].round(9)), np.unique(cells[s, False].round(9)))
    assert cells[1, False].max() < cells[0, False].min()        # stratum_1 (margin 0.4) is nearer
    shares = [planted[stratum == s].mean() for s in (0, 1)]
    np.testing.assert_allclose(shares, [0.2, 0.8], atol=0.03)   # group is tied to stratum: confounded
    everywhere = np.concatenate([cells[s, g] for s in (0, 1) for g in (False, True)])
    in_planted = np.concatenate([np.zeros(len(cells[s, g]), bool) + g for s in (0, 1) for g in (False, True)])
    assert everywhere[in_planted].mean() < 0.7 * everywhere[~in_planted].mean()   # so unadjusted, planted is nearer


def test_a_direct_effect_puts_the_planted_group_nearer_within_each_stratum():
    cells, _, _ = by_cell(planted_margin=0.7)
    for s in (0, 1):
        assert cells[s, True].max() < cells[s, False].min()
        assert cells[s, True].mean() / cells[s, False].mean() == pytest.approx(0.7, abs=0.05)


def test_strata_land_in_the_records_and_without_them_nothing_changes():
    grey = {"normalization": {"mean": [0.5], "std": [0.25]}}
    data = SyntheticDataModule(n_samples=100, stratum_margins=[1.0, 0.4], stratum_planted_shares=[0.2, 0.8], **grey)
    assert data.partitions == ["class", "group", "stratum"]
    assert list(data.test_metadata()["stratum"].cat.categories) == ["stratum_0", "stratum_1"]
    assert SyntheticDataModule(n_samples=100, **grey).partitions == ["class", "group"]


@pytest.mark.parametrize(("options", "message"), [
    (dict(stratum_margins=[1.0, 0.4], stratum_planted_shares=[0.5]), "dataset.stratum_margins has 2 strata but"),
    (dict(stratum_margins=[1.0, 0.0], stratum_planted_shares=[0.2, 0.8]), "dataset.stratum_margins=[1,0]: each"),
    (dict(stratum_margins=[1.0, 0.4], stratum_planted_shares=[0.0, 0.8]), "dataset.stratum_planted_shares=[0,0.8]")])
def test_impossible_strata_are_one_line_naming_the_option_and_the_fix(options, message):
    """The command line's rules and words (config/data.py), for a data module made in Python too."""
    with pytest.raises(ConfigError) as error:
        SyntheticDataModule(normalization={"mean": [0.5], "std": [0.25]}, **options)
    assert str(error.value).startswith(message) and "Fix: " in str(error.value) and "\n" not in str(error.value)


def test_the_schema_checks_each_stratum_setting():
    assert config_problem(["dataset=synthetic", "dataset.stratum_planted_shares=[0.2,1.0]"]) == \
        "dataset.stratum_planted_shares=[0.2,1]: each must lie strictly between 0 and 1. " \
        "Fix: pass dataset.stratum_planted_shares=[0.2,0.8]"
    assert config_problem(["dataset=synthetic", "dataset.stratum_margins=[1.0,-1]"]).startswith(
        "dataset.stratum_margins=[1,-1]: each must be a positive number")
