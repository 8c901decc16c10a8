"""CUDA-graphed attack steps: the same results as eager steps, one capture per step function.

On a CPU a stand-in graph replays the step on the captured buffers, which checks everything but
the CUDA calls: padding to the pool's width, copying in and out, shared arguments, reuse across
calls. The last tests capture real graphs and run only where a GPU is present.
"""

import contextlib
import logging

import pytest
import torch
from torch import nn

from robustness_bias.estimators import CarliniWagner, DeepFool
from robustness_bias.estimators import graphs
from robustness_bias.estimators.graphs import GraphedSteps, pad

ATTACKS = [lambda **kw: DeepFool(steps=30, **kw), lambda **kw: CarliniWagner(binary_search_steps=3, steps=30, **kw),
           lambda **kw: DeepFool(steps=30, gradients="batched", **kw),
           lambda **kw: DeepFool(steps=30, gradients="replicated", **kw)]
NAMES = ["deepfool", "cw", "deepfool_batched", "deepfool_replicated"]


def cnn_and_inputs(count=40, device="cpu"):
    """A small random CNN and inputs whose attacks take different numbers of steps, so that rows leave
    the pool at different times and the pool's last rows drain through several sizes."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 3 * 3, 5))
    model = model.to(device).eval()
    x = torch.rand(count, 3, 8, 8, device=device)
    return model, x, model(x).argmax(1)


HOST_SYNCS = ("item", "tolist", "nonzero", "__bool__", "__float__", "__int__")   # what no graph can hold


def clobber(tensors):
    """What another graph's replay may leave in memory a graph shares with it."""
    for tensor in tensors:
        tensor.fill_(float("nan") if tensor.is_floating_point() else True if tensor.dtype == torch.bool else -1)


@pytest.fixture
def stand_in_graphs(monkeypatch):
    """Capture on the CPU: run the step once, with every host synchronisation raising as it would in a
    capture, to get its output buffers; replay runs it again on the captured input buffers, writes into
    those outputs, and fills every other graph's outputs with garbage, as replays in a shared memory
    pool may. Returns what was captured: (step, number of inputs, padded batch size) for each graph."""
    captured, graphs_so_far = [], []

    class StandInGraph:
        def __init__(self, step, inputs, outputs):
            self.step, self.inputs, self.outputs = step, inputs, outputs

        def replay(self):
            for other in graphs_so_far:
                if other is not self:
                    clobber(other.outputs)
            for buffer, value in zip(self.outputs, self.step(*self.inputs)):
                buffer.copy_(value)

    def capture(self, step, inputs):
        captured.append((getattr(step, "__name__", None) or step.func.__name__, len(inputs), len(inputs[0])))
        with pytest.MonkeyPatch.context() as capturing:
            for name in HOST_SYNCS:
                capturing.setattr(torch.Tensor, name, lambda *_, name=name: pytest.fail(f"{name} in a captured step"))
            outputs = step(*inputs)
        graphs_so_far.append(StandInGraph(step, inputs, outputs))
        return graphs_so_far[-1], inputs, outputs

    monkeypatch.setattr(graphs, "capturable", lambda tensor: True)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    monkeypatch.setattr(GraphedSteps, "_capture", capture)
    return captured


def test_the_stand_in_catches_a_step_that_waits_for_the_host(stand_in_graphs):
    with pytest.raises(pytest.fail.Exception, match="__float__ in a captured step"):
        GraphedSteps(enabled=True)(lambda x: (x * float(x.abs().max()),), (torch.rand(3, 2),))


@pytest.mark.parametrize("make", ATTACKS, ids=NAMES)
def test_graphed_steps_give_the_eager_results_and_capture_once_per_step_function(make, stand_in_graphs):
    model, x, y = cnn_and_inputs()
    eager = make()(model, x, y, batch_size=8)
    attack = make(cuda_graphs=True)
    graphed = attack(model, x, y, batch_size=8)
    for field in ("distance", "success", "queries", "failure"):
        torch.testing.assert_close(getattr(graphed, field), getattr(eager, field), msg=field)
    assert eager.success.float().mean() > 0.5 and len(eager.queries.unique()) >= 3   # rows left at different steps
    captured = list(stand_in_graphs)
    # DeepFool: its check (the iterate's logits) and its step; CW: its Adam step, 18 row tensors and Adam's table
    expected = [("look", 1, 8), ("move", 5, 8)] if isinstance(attack, DeepFool) else [("_adam_step", 19, 8)]
    assert sorted(captured) == expected, captured
    again = attack(model, x, y, batch_size=8)   # a later call of the same audit replays what the first captured
    assert stand_in_graphs == captured
    torch.testing.assert_close(again.distance, graphed.distance)
    attack(model, x[:5], y[:5], batch_size=8)   # a chunk smaller than the pool is padded to it: no new graph
    assert stand_in_graphs == captured


def test_released_graphs_are_captured_anew(stand_in_graphs):
    """What the audit does when it ends or runs out of memory: the next call captures again."""
    model, x, y = cnn_and_inputs(count=8)
    for attack in (DeepFool(cuda_graphs=True), CarliniWagner(binary_search_steps=1, steps=5, cuda_graphs=True)):
        attack(model, x, y)
        first = list(stand_in_graphs)
        attack(model, x, y)
        assert stand_in_graphs == first
        attack.release_memory()
        attack(model, x, y)
        assert stand_in_graphs[len(first):] == first   # the same graphs, captured again
        stand_in_graphs.clear()


def test_another_model_gets_its_own_graphs(stand_in_graphs):
    model, x, y = cnn_and_inputs(count=8)
    attack = DeepFool(cuda_graphs=True)
    attack(model, x, y)
    first = len(stand_in_graphs)
    other, _, _ = cnn_and_inputs(count=8)
    with torch.no_grad():
        other[0].weight.mul_(-1)
    result = attack(other, x, y)
    assert len(stand_in_graphs) > first
    torch.testing.assert_close(result.distance, DeepFool()(other, x, y).distance)


def test_graphs_stay_off_unless_asked_for_and_off_the_gpu(stand_in_graphs, monkeypatch, caplog):
    model, x, y = cnn_and_inputs(count=8)
    DeepFool()(model, x, y)
    CarliniWagner(binary_search_steps=1, steps=5)(model, x, y)
    assert stand_in_graphs == [] and not caplog.records
    monkeypatch.setattr(graphs, "capturable", lambda tensor: tensor.is_cuda)
    with caplog.at_level(logging.WARNING, logger="robustness_bias.estimators.graphs"):
        DeepFool(cuda_graphs=True)(model, x, y)
    assert stand_in_graphs == []
    assert [r.getMessage() for r in caplog.records] == [
        "deepfool: cuda_graphs=true has no effect on cpu tensors; its steps run eagerly"]   # once, not per step


def test_padding_repeats_the_last_row_and_keeps_channels_last():
    x = torch.rand(3, 2, 4, 4).contiguous(memory_format=torch.channels_last)
    padded = pad(x, 8)
    assert padded.shape == (8, 2, 4, 4) and padded.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(padded[:3], x) and torch.equal(padded[3:], x[2:].expand(5, 2, 4, 4))


gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")


@gpu
@pytest.mark.parametrize("make", ATTACKS, ids=NAMES)
def test_real_cuda_graphs_give_the_eager_results(make, monkeypatch):
    """A padded batch may get another convolution algorithm than the eager one, so the last bits may
    differ and a borderline sample may take another step: agreement is asked of nearly all samples.
    Two graphed calls replay the same graphs and agree exactly."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)   # fp32 convolutions: differences of rounding only
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)  # no atomics: replays repeat to the bit
    model, x, y = cnn_and_inputs(count=100, device="cuda")
    eager = make()(model, x, y, batch_size=32)
    attack = make(cuda_graphs=True)
    capturing, replaying = attack(model, x, y, batch_size=32), attack(model, x, y, batch_size=32)
    for field in ("distance", "success", "queries", "failure"):
        assert torch.equal(getattr(replaying, field), getattr(capturing, field)), field
    same = (capturing.queries == eager.queries) & capturing.success & eager.success
    assert same.float().mean() >= 0.95 and (capturing.success == eager.success).float().mean() >= 0.98
    torch.testing.assert_close(capturing.distance[same], eager.distance[same], rtol=1e-4, atol=1e-5)
    graphs = attack.step_cache.current.graphs
    assert len(graphs.captured) == (2 if isinstance(attack, DeepFool) else 1)   # one per step function


class WaitsForTheHost(nn.Module):
    """A model that reads a value back to the host in its forward pass, which no CUDA graph can hold."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3 * 8 * 8, 5)

    def forward(self, x):
        scale = float(x.abs().max())   # a host synchronisation
        return self.linear(x.flatten(1)) * scale


class CapturingStream:
    """A stand-in CUDA stream: a capture on the CPU needs nothing of it."""

    def wait_stream(self, other):
        pass


@contextlib.contextmanager
def capture_that_forbids_host_syncs(graph, pool=None, stream=None):
    """``torch.cuda.graph`` on the CPU: a host synchronisation inside raises as CUDA's does mid-capture."""
    def forbidden(*_):
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing")

    with pytest.MonkeyPatch.context() as capturing:
        for name in HOST_SYNCS:
            capturing.setattr(torch.Tensor, name, forbidden)
        yield


def test_a_capture_that_fails_names_the_setting_to_turn_off_and_restores_the_stream(monkeypatch):
    """GraphedSteps' own capture, its CUDA calls stood in for: the failure names the override to use, the
    warm-up ran outside the capture, and the stream current before the capture is current again."""
    current = CapturingStream()
    made_current = []
    for name, value in (("graph_pool_handle", object), ("Stream", CapturingStream), ("CUDAGraph", object),
                        ("stream", lambda stream: contextlib.nullcontext()), ("current_stream", lambda: current),
                        ("set_stream", made_current.append), ("graph", capture_that_forbids_host_syncs),
                        ("device", lambda device: contextlib.nullcontext())):
        monkeypatch.setattr(torch.cuda, name, value)
    monkeypatch.setattr(graphs, "capturable", lambda tensor: True)
    torch.manual_seed(0)
    model = WaitsForTheHost().eval()
    x = torch.rand(16, 3, 8, 8)
    with pytest.raises(RuntimeError, match=r"estimator\.deepfool\.cuda_graphs=false") as failure:
        DeepFool(cuda_graphs=True)(model, x, model(x).argmax(1))
    assert "operation not permitted when stream is capturing" in str(failure.value)
    assert made_current == [current]

@gpu
def test_a_model_that_cannot_be_captured_names_the_setting_to_turn_off():
    torch.manual_seed(0)
    model = WaitsForTheHost().cuda().eval()
    x = torch.rand(16, 3, 8, 8, device="cuda")
    with pytest.raises(RuntimeError, match=r"estimator\.deepfool\.cuda_graphs=false"):
        DeepFool(cuda_graphs=True)(model, x, model(x).argmax(1))


def test_bench_times_the_graphed_attacks_against_foolbox(stand_in_graphs, capsys):
    import estimators as bench   # bench/, on the path through conftest

    # the paper's CW budget and short DeepFool and FMN runs: the rows and lines are what is tested, not the speeds
    table = bench.main(["--images", "8", "--image-size", "16", "--rs-n", "100", "--rs-images", "1", "--repeats", "1",
                        "--cw-budgets", "paper", "--deepfool-steps", "10", "--fmn-steps", "10",
                        "--skip", "torchattacks", "cohen", "adv-lib", "--cuda-graphs"])
    printed = capsys.readouterr().out
    graphed = table.set_index("method").loc[["deepfool (ours, cuda graphs)", "cw (ours, cuda graphs, paper budget)"]]
    assert (graphed["images/s"] > 0).all() and (graphed["success"] > 0).all()
    assert "the warm-up call on all inputs:" in printed and stand_in_graphs
    for attack, peer in (("deepfool", "L2DeepFoolAttack"), ("cw (paper budget)", "L2CarliniWagnerAttack (paper budget)")):
        assert f"{attack} with cuda graphs: " in printed and f"× foolbox {peer}'s images/s" in printed
