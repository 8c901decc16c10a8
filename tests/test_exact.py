"""The exact estimator against brute force, and its refusal of non-linear models."""

import pytest
import torch

from robustness_bias.estimators import EstimatorMismatch, ExactLinear
from robustness_bias.models import logreg, small_cnn

SHAPE = (1, 4, 4)
NORMALIZATION = {"mean": [0.3], "std": [0.5]}


def _model(num_classes=4, seed=0):
    torch.manual_seed(seed)
    return logreg(SHAPE, num_classes, NORMALIZATION).eval()


def _flip_distance(model, x, direction, upper=50.0, steps=60):
    """Smallest t with argmax f(x + t·u) ≠ argmax f(x), by bisection (assumes one crossing on [0, upper])."""
    with torch.no_grad():
        label = model(x[None]).argmax()
        low, high = 0.0, upper
        if model((x + high * direction)[None]).argmax() == label:
            return float("inf")
        for _ in range(steps):
            mid = (low + high) / 2
            if model((x + mid * direction)[None]).argmax() == label:
                low = mid
            else:
                high = mid
    return high


def test_exact_distance_equals_a_line_search_along_the_optimal_direction():
    model = _model()
    torch.manual_seed(1)
    x = torch.rand(16, *SHAPE)
    y = model(x).argmax(1)
    result = ExactLinear()(model, x, y)
    assert result.success.all() and (result.queries == 1).all()

    # Pixel-space weights folded by hand: f(x) = W (x − m)/s + b.
    linear = model[2]
    weights = (linear.weight / NORMALIZATION["std"][0]).double()
    for i in range(len(x)):
        label = int(y[i])
        brute = float("inf")
        for k in range(weights.shape[0]):
            if k != label:
                direction = (weights[k] - weights[label]) / (weights[k] - weights[label]).norm()
                brute = min(brute, _flip_distance(model, x[i], direction.float().view(SHAPE)))
        assert result.distance[i].item() == pytest.approx(brute, rel=1e-4, abs=1e-5)


def test_no_random_direction_flips_closer_than_the_exact_distance():
    model = _model(seed=3)
    torch.manual_seed(2)
    x = torch.rand(4, *SHAPE)
    exact = ExactLinear()(model, x, model(x).argmax(1)).distance
    for i in range(len(x)):
        for _ in range(50):
            direction = torch.randn(SHAPE)
            direction /= direction.norm()
            assert _flip_distance(model, x[i], direction, upper=1e3) >= exact[i].item() * (1 - 1e-4)


def test_binary_logreg_distance_is_margin_over_weight_norm():
    model = _model(num_classes=2)
    x = torch.rand(8, *SHAPE)
    with torch.no_grad():
        logits = model(x)
    weights = model[2].weight / NORMALIZATION["std"][0]
    expected = (logits[:, 0] - logits[:, 1]).abs() / (weights[0] - weights[1]).norm()
    torch.testing.assert_close(ExactLinear()(model, x, logits.argmax(1)).distance, expected, rtol=1e-4, atol=1e-6)


def test_exact_refuses_a_non_linear_model_by_name():
    cnn = small_cnn(SHAPE, 3, NORMALIZATION)
    with pytest.raises(EstimatorMismatch, match=r"'exact' needs an affine model.*ReLU.*model=logreg"):
        ExactLinear().check_model(cnn)


def test_exact_detects_a_model_that_is_not_affine_at_run_time():
    class Squash(torch.nn.Linear):  # passes the layer check, but is not affine
        def forward(self, x):
            return torch.tanh(super().forward(x)) * 5

    model = torch.nn.Sequential(torch.nn.Flatten(), Squash(16, 3)).eval()
    x = torch.rand(8, *SHAPE)
    with pytest.raises(EstimatorMismatch, match="not affine"):
        ExactLinear()(model, x, model(x).argmax(1))
