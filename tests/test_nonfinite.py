"""NaN logits during an attack fail their own sample as ``nonfinite_logits`` and leave the rest alone (issue #8)."""

import math

import pytest
import torch
from torch import nn

from robustness_bias.estimators import (
    CarliniWagner,
    DeepFool,
    ExactLinear,
    RandomizedSmoothing,
)
from robustness_bias.estimators.base import (
    ABSTAINED,
    BUDGET_EXHAUSTED,
    NO_FAILURE,
    NONFINITE_LOGITS,
    WRONG_CLASS,
)
from robustness_bias.models import logreg

SHAPE = (1, 4, 4)


class PoisonedRegion(nn.Module):
    """Three classes; NaN logits wherever pixel 0 exceeds ``nan_above`` while the marker pixel 1 exceeds 0.75.

    Class 1 beats class 0 only where pixel 0 exceeds 0.5 (its score is 4·(x₀ − 0.6) plus at most
    ±0.28 from the other pixels), so with ``nan_above=0.5`` every attack on a marked sample must
    enter the NaN region. The score bends down along pixel 0, so DeepFool needs several steps, and
    class 2 never wins. Unmarked samples (pixel 1 = 0) are six noise σ of 0.125 away from the
    region: they never see a NaN.
    """

    def __init__(self, nan_above=0.5):
        super().__init__()
        self.nan_above = nan_above
        self.rest = nn.Linear(16, 1)
        with torch.no_grad():
            self.rest.weight.uniform_(-0.02, 0.02, generator=torch.Generator().manual_seed(0))
            self.rest.weight[0, :2] = 0.0   # pixel 0 enters below; the marker never moves
            self.rest.bias.zero_()

    def forward(self, x):
        flat = x.flatten(1)
        pixel = flat[:, 0]
        score = 4 * (pixel - 0.6) - 3 * (pixel - 0.45) ** 2 + self.rest(flat)[:, 0]
        logits = torch.stack([torch.zeros_like(score), score, torch.full_like(score, -10.0)], 1)
        poisoned = (pixel > self.nan_above) & (flat[:, 1] > 0.75)
        return torch.where(poisoned[:, None], torch.full_like(logits, math.nan), logits)


def _inputs(count=6, seed=0):
    """Class-0 points with pixel 0 at 0.45, of which the odd ones are marked; returns (x, y, marked)."""
    torch.manual_seed(seed)
    x = 0.3 + 0.4 * torch.rand(count, *SHAPE)
    x[:, 0, 0, 0] = 0.45
    marked = torch.arange(count) % 2 == 1
    x[:, 0, 0, 1] = marked.float()
    return x, torch.zeros(count, dtype=torch.long), marked


@pytest.fixture
def model():
    return PoisonedRegion().eval()


def _assert_same(mixed, alone, rows):
    """The healthy rows of a mixed batch equal the run without the poisoned ones, bit for bit."""
    for field in ("distance", "success", "queries", "failure"):
        torch.testing.assert_close(getattr(mixed, field)[rows], getattr(alone, field), rtol=0, atol=0, msg=field)


def test_the_model_is_clean_at_the_inputs_and_nan_past_the_boundary(model):
    x, y, marked = _inputs()
    assert torch.isfinite(model(x)).all() and (model(x).argmax(1) == y).all()
    pushed = x.clone()
    pushed[:, 0, 0, 0] = 0.9
    assert torch.isnan(model(pushed)[marked]).all() and (model(pushed)[~marked].argmax(1) == 1).all()


@pytest.mark.parametrize(("attack", "healthy"), [
    (DeepFool(gradients="loop"), NO_FAILURE),
    (DeepFool(gradients="batched"), NO_FAILURE),
    (DeepFool(steps=1), BUDGET_EXHAUSTED),          # the NaN turns up in the final check
    (CarliniWagner(binary_search_steps=3, steps=100, initial_const=0.1), NO_FAILURE),
], ids=["deepfool-loop", "deepfool-batched", "deepfool-one-step", "cw"])
@pytest.mark.parametrize("width", [None, 2], ids=["one-batch", "pool-of-2"])
def test_attacks_fail_only_the_poisoned_samples(model, attack, healthy, width):
    """In a pool of 2 the poisoned samples leave early and healthy ones take their rows."""
    x, y, marked = _inputs()
    mixed = attack(model, x, y, batch_size=width)
    assert (~mixed.success[marked]).all() and torch.isinf(mixed.distance[marked]).all()
    assert (mixed.failure[marked] == NONFINITE_LOGITS).all()
    assert (mixed.failure[~marked] == healthy).all()
    if healthy == NO_FAILURE:
        assert torch.isfinite(mixed.distance[~marked]).all()
        # the poisoned samples left early, while the healthy ones took several steps
        assert mixed.queries[marked].max() < mixed.queries[~marked].min()
    _assert_same(mixed, attack(model, x[~marked], y[~marked], batch_size=width), ~marked)


def test_cw_keeps_the_adversarial_point_found_before_the_logits_went_nan():
    # NaN only well past the boundary (pixel 0 ≈ 0.63), where a confidence margin of 1 drives CW.
    x, y, _ = _inputs()
    x[:, 0, 0, 1] = 1.0
    attack = CarliniWagner(binary_search_steps=3, steps=100, initial_const=1.0, confidence=1.0)
    result = attack(PoisonedRegion(nan_above=0.72).eval(), x, y)
    unpoisoned = attack(PoisonedRegion(nan_above=math.inf).eval(), x, y)
    assert result.success.all() and (result.failure == NO_FAILURE).all()
    # the NaN cut the search short; the bisection still brings the kept point back to the boundary
    assert (result.queries < unpoisoned.queries).all()
    torch.testing.assert_close(result.distance, unpoisoned.distance, rtol=1e-2, atol=0)


def test_smoothing_fails_poisoned_samples_and_keeps_the_others_radii(model):
    x, y, marked = _inputs()
    index = torch.arange(len(x)) * 7
    smoothing = RandomizedSmoothing(n0=100, n=2000, forward_batch=500)
    mixed = smoothing(model, x, y, index=index)
    assert (~mixed.success[marked]).all() and (mixed.distance[marked] == 0).all()
    assert (mixed.failure[marked] == NONFINITE_LOGITS).all()
    assert mixed.success[~marked].all() and (mixed.distance[~marked] > 0).all()
    _assert_same(mixed, smoothing(model, x[~marked], y[~marked], index=index[~marked]), ~marked)


def test_smoothing_names_abstentions_and_wrong_classes(model):
    x, y, marked = _inputs()
    x, y = x[~marked], y[~marked]
    # Put pixel 0 on the boundary, the root p in [0.45, 1] of 4·(p − 0.6) − 3·(p − 0.45)² + rest = 0:
    # the smoothed vote is a coin toss there. With the labels flipped, the others certify a wrong class.
    rest = model.rest(x.flatten(1))[:, 0]
    a, b, c = -3.0, 4 + 2 * 3 * 0.45, -2.4 - 3 * 0.45 ** 2 + rest
    undecided = x.clone()
    undecided[:, 0, 0, 0] = (-b + torch.sqrt(b * b - 4 * a * c)) / (2 * a)
    result = RandomizedSmoothing(n0=100, n=2000, forward_batch=500)(model, torch.cat([undecided, x]),
                                                                    torch.cat([y, 1 - y]))
    assert not result.success.any() and (result.distance == 0).all()
    assert (result.failure[:len(x)] == ABSTAINED).all() and (result.failure[len(x):] == WRONG_CLASS).all()


def test_exact_fails_a_nan_input_row_alone():
    torch.manual_seed(0)
    model = logreg(SHAPE, 3, {"mean": [0.5], "std": [0.25]}).eval()
    x = torch.rand(4, *SHAPE)
    y = model(x).argmax(1)
    clean = ExactLinear()(model, x, y)
    x[1, 0, 2, 2] = math.nan
    result = ExactLinear()(model, x, y)
    assert not result.success[1] and math.isinf(result.distance[1]) and result.failure[1] == NONFINITE_LOGITS
    keep = torch.tensor([True, False, True, True])
    assert (result.failure[keep] == NO_FAILURE).all()
    torch.testing.assert_close(result.distance[keep], clean.distance[keep], rtol=0, atol=0)


def test_exact_fails_every_sample_of_a_model_with_a_nan_weight():
    torch.manual_seed(0)
    model = logreg(SHAPE, 3, {"mean": [0.5], "std": [0.25]}).eval()
    with torch.no_grad():
        model[2].weight[0, 3] = math.nan
    x = torch.rand(4, *SHAPE)
    result = ExactLinear()(model, x, torch.zeros(4, dtype=torch.long))
    assert not result.success.any() and torch.isinf(result.distance).all()
    assert (result.failure == NONFINITE_LOGITS).all()
