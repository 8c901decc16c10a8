"""Smoothing's forward batch: measured unless set, probed once per model and input, and never in the radii."""

import types

import pytest
import torch
from torch import nn

from conftest import compose_config, config_problem
from test_estimators import NORM, SHAPE, interior_points, small_weights
from robustness_bias.estimators import RandomizedSmoothing
from robustness_bias.estimators import fastest_batch, smoothing
from robustness_bias.models import logreg

SETTINGS = dict(n0=50, n=2000, noise_chunk=300)


@pytest.fixture
def binary_linear():
    torch.manual_seed(0)
    return small_weights(logreg(SHAPE, 2, NORM))


class RowsSeen(nn.Module):
    """A model that remembers how many rows each forward pass got; any image size gives two logits."""

    def __init__(self):
        super().__init__()
        self.rows: list[int] = []
        self.layers = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        self.rows.append(len(x))
        return self.layers(x)


@pytest.fixture
def probes(monkeypatch):
    """The arguments of every probe smoothing runs (the probe itself still runs), counted where smoothing
    looks the probe up."""
    calls = []
    probe = smoothing.fastest_forward_batch

    def counted(forward, x, *args, **kwargs):
        calls.append((forward, tuple(x.shape[1:])))
        return probe(forward, x, *args, **kwargs)

    monkeypatch.setattr(smoothing, "fastest_forward_batch", counted)
    return calls


def test_records_are_the_same_at_two_forced_forward_batches_and_the_measured_one(binary_linear, probes):
    x, y, _ = interior_points(binary_linear, 4, seed=3)
    index = torch.tensor([3, 17, 256, 9000])
    measured = RandomizedSmoothing(**SETTINGS)
    results = [RandomizedSmoothing(forward_batch=batch, **SETTINGS)(binary_linear, x, y, index=index)
               for batch in (37, 1000)] + [measured(binary_linear, x, y, index=index)]
    assert len(probes) == 1
    assert measured.forward_batch_for(binary_linear, x) in fastest_batch.probe_batches(len(x) * 2000)
    for result in results[1:]:
        for field in ("distance", "success", "queries", "failure"):
            assert torch.equal(getattr(result, field), getattr(results[0], field)), field
    assert results[0].success.all() and len(set(results[0].distance.tolist())) == 4   # four different radii


def test_the_probe_runs_once_per_model_and_input_shape_and_its_batch_is_the_one_used(probes):
    model, twin = RowsSeen().eval(), RowsSeen().eval()
    rs = RandomizedSmoothing(n0=20, n=2000)
    y = torch.zeros(2, dtype=torch.long)
    for images in (torch.rand(2, 1, 6, 6), torch.rand(2, 1, 6, 6), torch.rand(2, 1, 8, 8)):
        rs(model, images, y)
    rs(twin, torch.rand(2, 1, 6, 6), y)
    assert probes == [(model, (1, 6, 6)), (model, (1, 8, 8)), (twin, (1, 6, 6))]
    chosen = rs.forward_batch_for(twin, torch.rand(1, 1, 6, 6))
    twin.rows.clear()
    rs(twin, torch.rand(2, 1, 6, 6), y)   # 2 × (20 + 2,000) noisy copies in passes of at most the chosen batch
    assert len(probes) == 3 and max(twin.rows) == min(chosen, 2 * 2000) and sum(twin.rows) == 2 * 2020


def test_an_explicit_forward_batch_wins_and_skips_the_probe(probes):
    model = RowsSeen().eval()
    RandomizedSmoothing(n0=20, n=500, forward_batch=64)(model, torch.rand(3, 1, 6, 6), torch.zeros(3, dtype=torch.long))
    assert probes == [] and max(model.rows) == 64


class Clock:
    """A fake ``time`` whose clock a fake model moves on by what its pass would cost."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


def costed_model(clock, seconds_for, tried):
    """A model whose pass over ``rows`` images takes ``seconds_for(rows)`` on ``clock`` (None: out of memory)."""
    def forward(x):
        tried.add(len(x))
        seconds = seconds_for(len(x))
        if seconds is None:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        clock.now += seconds
        return torch.zeros(len(x), 2)
    return forward


@pytest.mark.parametrize(("seconds_for", "chosen", "largest_tried"), [
    (lambda rows: 1e-3 + rows * 1e-5 if rows <= 256 else rows * 3e-5, 256, 512),   # slower above 256: stop at 512
    (lambda rows: 1e-3 + rows * 1e-5 if rows <= 128 else None, 128, 256),          # 256 does not fit in memory
    (lambda rows: 0.01 * rows ** 0.5, 1024, 1024),                                  # a 0.25 s pass ends growth
    (lambda rows: 1e-3 + rows * 1e-6, 16384, 16384),                               # still faster at the largest
], ids=["throughput-drops", "out-of-memory", "long-pass", "largest"])
def test_the_probe_picks_the_fastest_batch_and_stops_growing_when_it_no_longer_pays(monkeypatch, seconds_for,
                                                                                      chosen, largest_tried):
    clock, tried = Clock(), set()
    monkeypatch.setattr(fastest_batch, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))
    probe = fastest_batch.fastest_forward_batch(costed_model(clock, seconds_for, tried), torch.rand(2, 1, 4, 4))
    assert probe.batch == chosen and max(tried) == largest_tried
    assert sorted(tried) == fastest_batch.probe_batches(largest_tried)


def test_nothing_fitting_in_memory_is_an_out_of_memory_error(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(fastest_batch, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))
    with pytest.raises(torch.cuda.OutOfMemoryError, match="not even 16 images of shape"):
        fastest_batch.fastest_forward_batch(costed_model(clock, lambda rows: None, set()), torch.rand(2, 1, 4, 4))


def test_the_probe_leaves_the_global_random_state_alone(binary_linear):
    """An audit probes between training epochs: the training that follows must not see another RNG."""
    images = torch.rand(3, *SHAPE)
    before = torch.get_rng_state()
    fastest_batch.fastest_forward_batch(binary_linear, images)
    assert torch.equal(torch.get_rng_state(), before)


def test_probe_batches_double_and_end_at_the_largest_useful_one():
    assert fastest_batch.probe_batches(100) == [16, 32, 64, 100]
    assert fastest_batch.probe_batches(5) == [5]
    assert fastest_batch.probe_batches(10 ** 9) == [16 << k for k in range(11)]


@pytest.mark.parametrize("value", [0, -5, 2.5])   # 2.5 is refused while composing, the others when the job starts
def test_settings_refuse_a_forward_batch_that_is_not_null_or_a_whole_number_of_at_least_one(value):
    rule = "must be a whole number ≥ 1, or null to measure the fastest. Fix: pass estimator.rs.forward_batch=null"
    assert config_problem(["estimator=[rs]", f"estimator.rs.forward_batch={value}"]) == \
        f"estimator.rs.forward_batch={value}: {rule}"
    with pytest.raises(ValueError, match="rs.forward_batch=0: must be a whole number ≥ 1"):
        RandomizedSmoothing(forward_batch=0)


def test_settings_take_null_and_a_whole_number():
    for override in ("estimator.rs.forward_batch=null", "estimator.rs.forward_batch=100"):
        assert config_problem(["estimator=[rs]", override]) is None
    assert compose_config(["estimator=[rs]"]).estimator.rs.forward_batch is None   # the shipped default measures


def test_the_benches_measure_smoothings_floor_at_the_measured_batch_whatever_it_runs_at(binary_linear, probes):
    import estimators as bench   # bench/, on the path through conftest

    images = torch.rand(3, *SHAPE)
    measured = RandomizedSmoothing(n=2000)
    runs_at, floor_at = bench.smoothing_batches(measured, binary_linear, images)
    assert runs_at == floor_at == measured.forward_batch_for(binary_linear, images) and len(probes) == 1
    runs_at, floor_at = bench.smoothing_batches(RandomizedSmoothing(n=2000, forward_batch=37), binary_linear, images)
    assert runs_at == 37 and floor_at in fastest_batch.probe_batches(len(images) * 2000) and len(probes) == 2
