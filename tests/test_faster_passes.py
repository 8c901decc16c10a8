"""Faster passes (docs/design.md, "Faster passes"): attacks that search in bf16 decide in fp32, so every
distance they report is that of a point the model itself misclassifies; channels-last images give the
same distances to float rounding."""

import pytest
import torch
from torch import nn

import compare_audits  # bench/, on the path through conftest
from test_fmn import SHAPE, affine_model, interior_points   # tests/, on the path as pytest runs them
from robustness_bias import audit
from robustness_bias.estimators import CarliniWagner, DeepFool, FastMinimumNorm, affine_parameters
from robustness_bias.estimators.base import is_channels_last
from robustness_bias.estimators.verdicts import FURTHER, shorten_onto_boundary

ATTACKS = {"deepfool": DeepFool, "cw": CarliniWagner, "fmn": FastMinimumNorm}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_an_attack_searching_in_bf16_reports_upper_bounds_on_the_fp32_model(name):
    """On a binary affine model every distance is at least the exact one (its point is misclassified at full
    precision): the search's bf16 logits, which err by about 2⁻⁸ of their size, never decide. DeepFool's and
    FMN's distances stay within 1% of their fp32 runs' (CW's: the next test)."""
    model = affine_model(2)
    x, y, exact = interior_points(model, 64, seed=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = ATTACKS[name]()(model, x, y, batch_size=32)
    assert result.success.all()
    assert (result.distance / exact >= 1 - 1e-5).all(), (result.distance / exact).min()
    if name != "cw":
        fp32 = ATTACKS[name]()(model, x, y, batch_size=32)
        ratio = result.distance / fp32.distance
        assert ratio.median() == pytest.approx(1, abs=0.01) and ratio.min() > 0.95 and ratio.max() < 1.05, ratio


def test_cw_in_bf16_loosens_by_stopping_its_runs_early_on_a_coarse_loss():
    """This model's logits are about 0.1, so bf16 rounds its margins in steps of about 4e-4: a run's loss then
    stalls by the early-abort test long before it would in fp32, and CW's median lands farther out. Without the
    early abort the bf16 search is as tight as the fp32 one (docs/design.md, "Faster passes")."""
    model = affine_model(2)
    x, y, exact = interior_points(model, 64, seed=1)
    medians = {}
    for abort_early in (True, False):
        fp32 = CarliniWagner(abort_early=abort_early)(model, x, y, batch_size=32)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = CarliniWagner(abort_early=abort_early)(model, x, y, batch_size=32)
        medians[abort_early] = [float((result.distance / exact).median()) for result in (fp32, bf16)]
    assert medians[True][1] > medians[True][0] * 1.05, medians
    assert medians[False][1] == pytest.approx(medians[False][0], rel=0.01), medians


def test_a_point_short_of_the_boundary_in_fp32_is_moved_out_along_its_direction():
    """A kept point that fools the bf16 copy but not the model is pushed out by the multiples of verdicts.FURTHER, then
    bisected back: its distance is that of a misclassified point, and a point no multiple makes adversarial has none."""
    model = affine_model(2)
    x, y, exact = interior_points(model, 3, seed=1)
    weights, _ = affine_parameters(model, SHAPE)   # pixel space
    direction = (weights[1 - y] - weights[y]).float().view(len(y), *SHAPE)
    unit = direction / direction.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    short = unit * (exact * 0.998).view(-1, 1, 1, 1)   # 0.2% short of the boundary: not adversarial
    short[2] = -short[2]                              # away from it: no multiple reaches it
    distance, queries = torch.zeros(3), torch.zeros(3, dtype=torch.long)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scale = shorten_onto_boundary(model, x, short, y, torch.arange(3), 10, distance, queries)
    assert (scale[:2] > 1).all() and torch.isinf(scale[2]) and torch.isinf(distance[2])
    ratio = distance[:2] / exact[:2]
    assert (ratio >= 1 - 1e-5).all() and (ratio <= 1.002).all(), ratio
    # the checks of verdicts.FURTHER's multiples up to the first that fools, then the bisection
    assert (queries[:2] >= 2 + 10).all() and queries[2] == len(FURTHER) + 10


def test_channels_last_images_give_the_same_distances_to_rounding(tmp_path):
    """audit.plan.<estimator>.channels_last: the estimator gets its images in channels-last memory, and the
    distances match those from the model's own layout to float rounding, as bench/compare_audits.py says too."""
    torch.manual_seed(0)
    images = torch.rand(64, 3, 12, 12)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3), nn.ReLU(),
                          nn.Flatten(), nn.Linear(8 * 3 * 3, 4)).eval()
    labels = model(images).argmax(1).numpy()
    layouts = []

    class Recording(DeepFool):
        def stream(self, model, chunks, batch_size, progress=None):
            def recorded():
                for x, y, index in chunks:
                    layouts.append(is_channels_last(x))
                    yield x, y, index
            return super().stream(model, recorded(), batch_size, progress)

    runs = {}
    for flag in (False, True):
        runs[flag] = audit(model, images, labels, estimators={"deepfool": Recording()}, folder=tmp_path / str(flag),
                           plans={"deepfool": {"channels_last": flag}}, progress=False).records
    assert layouts == [False, True]
    plain, fast = runs[False], runs[True]
    assert fast["success"].equals(plain["success"]) and fast["queries"].equals(plain["queries"])
    ok = plain["success"]
    torch.testing.assert_close(torch.as_tensor(fast.loc[ok, "distance"].to_numpy()),
                               torch.as_tensor(plain.loc[ok, "distance"].to_numpy()), rtol=1e-5, atol=0)
    compared = compare_audits.main([str(tmp_path / f"{flag}" / "audits" / "final") for flag in (False, True)])
    (row,) = compared.to_dict("records")
    assert row["estimator"] == "deepfool" and row["succeeded"] == row["base succeeded"] == int(ok.sum())
    assert abs(row["ratio min"] - 1) < 1e-5 and abs(row["ratio max"] - 1) < 1e-5 and row["max |Δσ|"] < 1e-4
