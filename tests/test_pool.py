"""Continuous batching (estimators/pool.py): the attacks' pools give every sample the result of its run
alone, with the same queries, while freed rows are refilled from the queue."""

import math

import numpy as np

import pytest
import torch
from torch import nn

from peers import Counted   # bench/, on the path through conftest
from robustness_bias.auditing import Samples, measure
from robustness_bias.config.job import EstimatorPlan
from robustness_bias.estimators import CarliniWagner, DeepFool, ExactLinear, FastMinimumNorm
from robustness_bias.estimators.base import BUDGET_EXHAUSTED, NO_FAILURE, NONFINITE_LOGITS
from robustness_bias.estimators.cw import ABORT_FACTOR, BETA1, BETA2, EPS, TANH_SCALE
from robustness_bias.estimators.deepfool import STABILITY
from robustness_bias.estimators.pool import Pool

FIELDS = ("distance", "success", "queries", "failure")
WIDTH, COUNT = 8, 40
ATTACKS = {
    "deepfool": lambda: DeepFool(steps=30),
    "deepfool_batched": lambda: DeepFool(steps=30, gradients="batched"),
    "deepfool_replicated": lambda: DeepFool(steps=30, gradients="replicated"),
    "deepfool_budget": lambda: DeepFool(steps=2),   # some samples exhaust their steps, others flip
    "cw": lambda: CarliniWagner(binary_search_steps=3, steps=30),
    "cw_no_abort": lambda: CarliniWagner(binary_search_steps=2, steps=12, abort_early=False, warm_start=False),
}

# Without early abort every CW sample spends its whole budget: its queries differ only by the refinement
DISTINCT_QUERIES = {"deepfool_budget": 2, "cw_no_abort": 2}


def cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 3 * 3, 5)).eval()


class OneRowAtATime(nn.Module):
    """``net`` on one row at a time, so that a row's arithmetic is the same in any batch: batched kernels
    round differently for other batch sizes, which would hide a real difference."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.train(net.training)

    def forward(self, x):
        return torch.cat([self.net(row[None]) for row in x])


class RowByRow(Counted):
    """The bench's counted model (rows of forward passes, with and without a graph, and of backward passes)
    around ``net`` run one row at a time; ``widths`` holds each call's batch size."""

    def __init__(self, net):
        super().__init__(OneRowAtATime(net))

    def reset(self):
        super().reset()
        self.widths = []

    def forward(self, x):
        self.widths.append(len(x))
        return super().forward(x)


def inputs(model, count=COUNT, seed=1):
    torch.manual_seed(seed)
    x = torch.rand(count, 3, 8, 8)
    with torch.no_grad():
        return x, model(x).argmax(1)


@pytest.fixture
def fills(monkeypatch):
    """(rows admitted, rows in the pool after, whether samples may still be queued: pulled and not admitted,
    or chunks not pulled yet) for every fill of every pool."""
    seen, fill = [], Pool.fill

    def spy(self):
        admitted = fill(self)
        seen.append((len(admitted["sample"]) if admitted else 0, len(self),
                     self.pulled > self.queued or not self.drained))
        return admitted

    monkeypatch.setattr(Pool, "fill", spy)
    return seen


@pytest.mark.parametrize("name", ["deepfool", "cw", "exact", "fmn"])
def test_progress_hears_of_samples_as_they_are_measured_not_per_chunk(name):
    """An audit's bar moves with each sample leaving an attack's pool (each batch of the other estimators), so a
    chunk of 1,024 images is not a bar at 0 until it is all done. The counts add up to the stream's samples,
    and a chunk comes back only after its own samples were counted."""
    model = cnn()
    x, y = inputs(model)
    estimator = {"exact": lambda: ExactLinear(), "fmn": lambda: FastMinimumNorm(steps=10),
                 **ATTACKS}[name]()
    if name == "exact":
        model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5)).eval()
        x, y = inputs(model)
    chunks = [(x[:24], y[:24], torch.arange(24)), (x[24:], y[24:], torch.arange(24, COUNT))]
    told, counted_when_back = [], {}
    for number, _ in estimator.stream(model, iter(chunks), WIDTH, progress=told.append):
        counted_when_back[number] = sum(told)
    assert sum(told) == COUNT and len(told) > len(chunks), told
    assert counted_when_back[0] >= 24 and counted_when_back[1] == COUNT, counted_when_back
    assert min(told) >= 1 and max(told) <= WIDTH, told


@pytest.mark.parametrize("name", ATTACKS)
def test_a_pool_gives_each_sample_its_result_alone_bit_for_bit(name, fills):
    model = RowByRow(cnn())
    x, y = inputs(model)
    alone = [ATTACKS[name]()(model, x[i:i + 1], y[i:i + 1]) for i in range(COUNT)]
    fills.clear()
    pooled = ATTACKS[name]()(model, x, y, batch_size=WIDTH)
    for field in FIELDS:
        assert torch.equal(getattr(pooled, field), torch.cat([getattr(r, field) for r in alone])), field
    # mixed step counts, so rows left at different times; refills kept the pool full while samples were queued
    assert len(pooled.queries.unique()) >= DISTINCT_QUERIES.get(name, 3), pooled.queries
    refills = [admitted for admitted, *_ in fills[1:] if admitted]
    assert sum(refills) == COUNT - WIDTH and all(size == WIDTH for _, size, queued in fills if queued), fills
    if name not in DISTINCT_QUERIES:   # rows freed one by one, not whole batches at a time
        assert len(refills) > COUNT // WIDTH and min(refills) < WIDTH, fills
    if name == "deepfool_budget":
        assert set(pooled.failure.tolist()) == {NO_FAILURE, BUDGET_EXHAUSTED}


SIZES = (8, 3, 0, 13, 16)   # chunks of COUNT samples: one as wide as the pool, narrower ones, an empty one


@pytest.mark.parametrize("name", ATTACKS)
def test_a_stream_of_chunks_runs_through_one_pool_and_each_sample_gets_its_result_alone(name, fills):
    """The pool runs on from chunk to chunk: it stays full while any chunk has samples left, and drains
    once, at the stream's end. Every chunk comes back once, with its own samples' results."""
    model = RowByRow(cnn())
    x, y = inputs(model)
    alone = [ATTACKS[name]()(model, x[i:i + 1], y[i:i + 1]) for i in range(COUNT)]
    starts = [sum(SIZES[:i]) for i in range(len(SIZES))]
    chunks = [(x[s:s + n], y[s:s + n], torch.arange(s, s + n)) for s, n in zip(starts, SIZES)]
    fills.clear()
    handed_back = dict(ATTACKS[name]().stream(model, iter(chunks), WIDTH))
    assert sorted(handed_back) == list(range(len(SIZES)))
    for number, (start, size) in enumerate(zip(starts, SIZES)):
        for field in FIELDS:
            expected = torch.cat([getattr(r, field) for r in alone[start:start + size]]) if size else \
                getattr(alone[0], field)[:0]
            assert torch.equal(getattr(handed_back[number], field), expected), (number, field)
    assert all(size == WIDTH for _, size, queued in fills if queued), fills
    assert sum(admitted for admitted, *_ in fills) == COUNT


@pytest.mark.parametrize("name", ATTACKS)
def test_a_pool_agrees_with_one_sample_at_a_time_on_a_batched_model(name):
    """With batched kernels a row's logits round differently in another batch (by up to 6e-8 here). Near the
    boundary DeepFool's distance is a difference of nearly equal logits over a gradient's norm, so the
    distances of samples 1e-3 away move by up to 1e-7: 1e-5 relative, or 2e-7 absolute below 0.02."""
    model = cnn()
    x, y = inputs(model)
    one_at_a_time = ATTACKS[name]()(model, x, y, batch_size=1)
    pooled = ATTACKS[name]()(model, x, y, batch_size=WIDTH)
    for field in ("success", "queries", "failure"):
        assert torch.equal(getattr(pooled, field), getattr(one_at_a_time, field)), field
    torch.testing.assert_close(pooled.distance, one_at_a_time.distance, rtol=1e-5, atol=2e-7)


def test_deepfool_charges_no_backward_pass_to_a_sample_that_flipped():
    """Each iterate is checked before the gradient pass: the backward passes run are exactly the counted
    ones. Its passes are every pass it runs: besides the queries, one forward pass per move that keeps a
    graph, which repeats the check at the same point (the check keeps none). ``replicated`` needs no
    such repeat: every pass it runs is a query."""
    for gradients in ("loop", "replicated"):
        model = RowByRow(cnn())
        x, y = inputs(model)
        model.reset()
        attack = DeepFool(steps=30, gradients=gradients)
        result = attack(model, x, y, batch_size=WIDTH)
        passes = attack.passes(result, classes=5)
        moves = passes.backward // 4   # one backward pass for each of the 4 candidates other than the label
        assert len(moves.unique()) >= 3 and torch.equal(passes.forward, 1 + moves)   # s moves, s + 1 checks
        assert model.forward_rows == int(passes.forward.sum()) and model.backward_rows == int(passes.backward.sum())
        assert model.graphed_rows == int(passes.graphed.sum())
        if gradients == "replicated":   # a forward pass for each candidate's copy, each a query
            assert torch.equal(passes.graphed, 4 * moves)
            assert torch.equal(passes.forward + passes.graphed + passes.backward, result.queries)
        else:   # one graph per move, repeating its check
            assert torch.equal(passes.graphed, moves)
            assert torch.equal(passes.forward + passes.backward, result.queries)


def test_cw_runs_exactly_its_counted_passes():
    model = RowByRow(cnn())
    x, y = inputs(model)
    model.reset()
    attack = CarliniWagner(binary_search_steps=3, steps=30)
    result = attack(model, x, y, batch_size=WIDTH)
    passes = attack.passes(result, classes=5)
    assert torch.equal(passes.forward + passes.graphed + passes.backward, result.queries)
    assert len(passes.backward.unique()) >= 3 and torch.equal(passes.forward, 10 * result.success.long())
    assert model.graphed_rows == int(passes.graphed.sum()) == model.backward_rows == int(passes.backward.sum())
    assert model.forward_rows == int(passes.forward.sum())
    # the refinement's passes run a pool's width at a time
    assert max(model.widths) == WIDTH


class Recorder(DeepFool):
    """DeepFool that records what the audit streams it: per stream its pool width and, as the pool pulls
    them, each chunk's count of inputs and dataset indices; and the chunks it hands back."""

    def __init__(self):
        super().__init__(steps=3)
        self.streams, self.handed_back = [], []

    def stream(self, model, chunks, batch_size, progress=None):
        pulled = []
        self.streams.append((batch_size, pulled))

        def recorded():
            for x, y, index in chunks:
                pulled.append((len(x), index.tolist()))
                yield x, y, index

        for number, result in super().stream(model, recorded(), batch_size, progress):
            self.handed_back.append((number, len(pulled)))
            yield number, result


def test_the_audit_streams_its_chunks_through_one_pool_pulled_as_needed():
    from robustness_bias.data import DigitsDataModule

    digits = DigitsDataModule(normalization={"mean": [0.3], "std": [0.4]})
    digits.setup()
    indices = digits.test_indices[:96]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    x, y, _ = next(iter(torch.utils.data.DataLoader(torch.utils.data.Subset(digits.table, digits.train_indices.tolist()),
                                                    batch_size=2000)))
    for _ in range(50):   # most test digits right: several chunks to attack
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    model.eval()
    recorder = Recorder()
    plan = {"r": (recorder, EstimatorPlan(batch_size=4, chunk_size=16))}
    records = measure(model, Samples(digits.table, indices), plan)
    attacked = records.loc[records["correct"], "sample_index"].tolist()
    chunks = [attacked[i:i + 16] for i in range(0, len(attacked), 16)]
    (width, pulled), = recorder.streams   # one stream, one pool, for all the chunks
    assert width == 4 and pulled == [(len(chunk), chunk) for chunk in chunks]
    assert sorted(number for number, _ in recorder.handed_back) == list(range(len(chunks)))
    # pulled only once the pool needed them: the first chunk came back before the last was pulled
    assert len(chunks) > 2 and recorder.handed_back[0][1] < len(chunks)
    alone = DeepFool(steps=3)(model, *next(iter(torch.utils.data.DataLoader(
        torch.utils.data.Subset(digits.table, attacked), batch_size=len(attacked))))[:2], batch_size=4)
    assert np.array_equal(records.loc[records["correct"], "queries"].to_numpy(), alone.queries.numpy())


def test_an_empty_call_and_a_pool_wider_than_its_samples():
    model = cnn()
    x, y = inputs(model, count=3)
    for attack in (DeepFool(steps=5), CarliniWagner(binary_search_steps=1, steps=5)):
        empty = attack(model, x[:0], y[:0], batch_size=4)
        assert all(len(getattr(empty, field)) == 0 for field in FIELDS)
        wide, whole = attack(model, x, y, batch_size=64), attack(model, x, y)
        for field in FIELDS:
            assert torch.equal(getattr(wide, field), getattr(whole, field)), field
    with pytest.raises(ValueError, match="at least one row"):
        Pool(0, [], lambda x, y: {}, lambda x, y: {})


def deepfool_alone(model, x, attack: DeepFool) -> tuple[float, bool, int, int]:
    """DeepFool on one sample with the host deciding each step, written from the paper: (distance,
    success, queries, failure). Queries: each check's forward pass, and per step one backward pass per
    candidate other than the label."""
    point, r = x[None], torch.zeros_like(x[None])
    with torch.no_grad():
        logits = model(point)
    k = min(attack.candidates, logits.shape[1])
    classes = logits[0].topk(k).indices
    label, queries = classes[0], 1
    for step in range(attack.steps + 1):
        if not torch.isfinite(logits).all():
            return math.inf, False, queries, NONFINITE_LOGITS
        if logits[0].argmax() != label:
            return float((point - x).norm()), True, queries, NO_FAILURE
        if step == attack.steps:
            return math.inf, False, queries, BUDGET_EXHAUSTED
        inputs = point.clone().requires_grad_(True)
        out = model(inputs)
        grads, losses = [], []
        for c in classes[1:]:
            direction = torch.zeros_like(out)
            direction[0, c], direction[0, label] = 1.0, -1.0
            grads.append(torch.autograd.grad(out, inputs, direction, retain_graph=True)[0])
            losses.append(logits[0, c] - logits[0, label])
        queries += k - 1
        norms = torch.stack([g.flatten(1).norm(dim=1)[0] for g in grads]) + 1e-8
        losses = torch.stack(losses)
        best = int((losses.abs() / norms).argmin())
        r = r + (losses[best].abs() / norms[best] + STABILITY) / norms[best] * grads[best]
        point = (x[None] + (1 + attack.overshoot) * r).clamp(0, 1)
        with torch.no_grad():
            logits = model(point)
        queries += 1


def cw_alone(model, x, y, attack: CarliniWagner) -> tuple[float, bool, int, int]:
    """Carlini–Wagner on one sample with the host deciding each step: a binary search over c of Adam runs
    that stop at a stall or a non-finite value (checked every ``check_every`` steps), each from the best
    point so far, then the bisection back to the boundary. (distance, success, queries, failure)."""
    x0, label = x[None], y[None]
    w0 = torch.atanh((x0 * 2 - 1) * TANH_SCALE)
    start = (torch.tanh(w0) + 1) / 2
    const, lower, upper = (torch.tensor([value], dtype=torch.float32) for value in (attack.initial_const, 0, math.inf))
    best, distance, queries, bad = torch.zeros_like(w0), torch.tensor([math.inf]), 0, False
    for search in range(attack.binary_search_steps):
        delta = best.clone() if attack.warm_start else torch.zeros_like(w0)
        m, v, previous, found = torch.zeros_like(w0), torch.zeros_like(w0), torch.tensor([math.inf]), False
        for t in range(attack.steps):
            d = delta.requires_grad_(True)
            adv = (torch.tanh(w0 + d) + 1) / 2
            logits = model(adv)
            other = logits.scatter(1, label[:, None], -math.inf).amax(1)
            loss = (logits[:, label[0]] - other + attack.confidence).clamp_min(0) * const \
                + (adv - start).flatten(1).pow(2).sum(1)
            grad, = torch.autograd.grad(loss.sum(), d)
            d, adv, loss, logits = d.detach(), adv.detach(), loss.detach(), logits.detach()
            queries += 2
            bad = bad or not (torch.isfinite(logits).all() and torch.isfinite(loss).all())
            if not bad and logits[0].argmax() != label[0]:
                found = True
                norm = (adv - x0).flatten(1).norm(dim=1)
                if norm < distance:
                    distance, best = norm, d
            m = BETA1 * m + (1 - BETA1) * grad
            v = BETA2 * v + (1 - BETA2) * grad * grad
            first, second = (torch.tensor(1 - beta ** (t + 1), dtype=torch.float32) for beta in (BETA1, BETA2))
            delta = d - attack.rate(x.numel()) * (m / first) / ((v / second).sqrt() + EPS)
            if t % attack.check_every == 0:
                if bad or (attack.abort_early and not loss <= ABORT_FACTOR * previous):
                    break
                previous = loss
        upper, lower = (const, lower) if found else (upper, const)
        const = const * 10 if torch.isinf(upper) else (lower + upper) / 2
        if bad:
            break
    if torch.isinf(distance):
        return math.inf, False, queries, NONFINITE_LOGITS if bad else BUDGET_EXHAUSTED
    perturbation = (torch.tanh(w0 + best) + 1) / 2 - x0
    low, high = 0.0, 1.0
    with torch.no_grad():
        for _ in range(attack.refine_steps):
            mid = (low + high) / 2
            logits = model(x0 + mid * perturbation)
            low, high = (low, mid) if torch.isfinite(logits).all() and logits[0].argmax() != label[0] else (mid, high)
    distance = min(float(distance), float((high * perturbation).flatten(1).norm(dim=1)))
    return distance, True, queries + attack.refine_steps, NO_FAILURE


@pytest.mark.parametrize("name", ["deepfool", "deepfool_budget", "cw", "cw_no_abort"])
def test_a_pool_gives_what_a_sample_alone_gets_from_the_papers_loop(name):
    """The reference decides every step on the host, one sample at a time; the pool decides on the device
    for every row at once. The same decisions give the same queries and failures; the distances agree
    to rounding (the reference's arithmetic is not the pool's to the last bit)."""
    model = RowByRow(cnn())
    x, y = inputs(model)
    attack = ATTACKS[name]()
    pooled = attack(model, x, y, batch_size=WIDTH)
    alone = [deepfool_alone(model, x[i], attack) if isinstance(attack, DeepFool)
             else cw_alone(model, x[i], y[i], attack) for i in range(COUNT)]
    distance, success, queries, failure = zip(*alone)
    assert pooled.success.tolist() == list(success) and pooled.failure.tolist() == list(failure)
    assert pooled.queries.tolist() == list(queries)
    torch.testing.assert_close(pooled.distance, torch.tensor(distance, dtype=torch.float32), rtol=1e-5, atol=0)
