"""Quality against the peers on a small trained CNN: same inputs, same budget, distances no larger."""


import platform
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import estimators as bench  # bench/, on the path through conftest
import peers

from robustness_bias.estimators import CarliniWagner, DeepFool  # noqa: E402
from robustness_bias.estimators.cw import PAPER_BUDGET  # noqa: E402


@pytest.fixture(scope="module")
def trained_cnn_and_inputs():
    model, pool_x, pool_y = bench.trained_model("small_cnn", 16, "cpu", epochs=3)
    x, y = bench.correct_inputs(model, pool_x, pool_y, 96)
    assert len(x) == 96
    return model, x, y


def _median(distances: torch.Tensor) -> float:
    return float(np.median(distances.numpy()))   # failures count as +inf


def test_deepfool_median_at_most_1_percent_above_foolbox(trained_cnn_and_inputs):
    model, x, y = trained_cnn_and_inputs
    ours = DeepFool(steps=50)(model, x, y)
    theirs = peers.foolbox_deepfool(model, x, y, steps=50)
    assert ours.success.float().mean() >= torch.isfinite(theirs).float().mean()
    assert _median(ours.distance) <= 1.01 * _median(theirs)


def test_cw_median_at_most_1_percent_above_foolbox_at_the_same_budget(trained_cnn_and_inputs):
    model, x, y = trained_cnn_and_inputs
    ours = CarliniWagner(**PAPER_BUDGET)(model, x, y)
    theirs = peers.foolbox_cw(model, x, y, binary_search_steps=5, steps=100, initial_const=0.01, learning_rate=5e-3)
    assert _median(ours.distance) <= 1.01 * _median(theirs)
    both = ours.success & torch.isfinite(theirs)
    assert (ours.distance[both] / theirs[both]).median() <= 1.0


def test_foolbox_cw_giving_up_is_a_failure_even_where_black_is_misclassified():
    """foolbox CW returns an all-black image where it found nothing; a model may misclassify black,
    which re-prediction alone would count as a success at distance ‖x‖."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2)).eval()
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[0] = 1.0          # class 0 for bright images, class 1 for black ones
        model[1].bias.copy_(torch.tensor([-10.0, 0.0]))
    x = torch.full((4, 3, 4, 4), 0.9)     # logit 0: 43.2 − 10, far from the boundary at a 1-step budget
    y = torch.zeros(4, dtype=torch.long)
    assert (model(torch.zeros_like(x)).argmax(1) != y).all()
    distances = peers.foolbox_cw(model, x, y, binary_search_steps=1, steps=1)
    assert torch.isinf(distances).all()


def test_bench_profile_shows_where_our_attacks_spend_their_time(capsys):
    bench.main(["--images", "8", "--device", "cpu", "--profile", "--cw-budgets", "paper", "--image-size", "16"])
    printed = capsys.readouterr().out
    for attack in ("deepfool", "cw"):
        assert f"{attack} (ours) under the profiler" in printed
    assert printed.count("Self CPU time total") == 2 and "aten::convolution_backward" in printed
    assert "DeepFool steps per flipped sample: median" in printed
    if platform.libc_ver()[0] == "glibc":
        assert "malloc's mmap threshold fixed at 32 MiB" in printed


def test_the_counted_model_counts_the_passes_a_peer_runs():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)).eval()
    counted = peers.Counted(model)
    assert not counted.training
    x = torch.rand(5, 3, 2, 2)
    with torch.no_grad():
        counted(x)
    inputs = x.clone().requires_grad_(True)
    out = counted(inputs)
    for column in range(2):   # two backward passes through one graph, as DeepFool's candidates take them
        torch.autograd.grad(out[:, column].sum(), inputs, retain_graph=True)
    assert (counted.forward_rows, counted.graphed_rows, counted.backward_rows) == (5, 5, 10)


class _Slow(torch.autograd.Function):
    """The identity, sleeping ``forward`` seconds in its forward pass and ``backward`` seconds in its backward pass."""

    @staticmethod
    def forward(ctx, x, forward, backward):
        time.sleep(forward)
        ctx.backward = backward
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        time.sleep(ctx.backward)
        return grad, None, None


def test_the_timed_model_times_its_own_passes_and_nothing_around_them():
    torch.manual_seed(0)
    linear = torch.nn.Linear(12, 3)
    model = torch.nn.Sequential(torch.nn.Flatten(), linear).eval()
    model.forward = lambda x: linear(_Slow.apply(x.flatten(1), 0.02, 0.03))   # 20 ms forward, 30 ms backward
    timed = peers.Timed(model)
    inputs = torch.rand(5, 3, 2, 2).requires_grad_(True)
    around = _Slow.apply(inputs, 0.05, 0.05)   # work of the attack's own, before and after the model's passes
    out = timed(around)
    for column in range(2):
        torch.autograd.grad(_Slow.apply(out[:, column], 0.05, 0.05).sum(), inputs, retain_graph=True)
    assert (timed.forward_rows, timed.graphed_rows, timed.backward_rows) == (0, 5, 10)
    assert 0.02 <= timed.forward_seconds < 0.045   # none of the 50 ms before them
    assert 0.06 <= timed.backward_seconds < 0.1   # two backward passes of 30 ms; none of the 50 ms around them
    assert [(kind, rows) for kind, rows, _ in timed.passes] == [("graphed", 5), ("backward", 5), ("backward", 5)]


def test_rates_by_width_sets_a_full_pools_passes_apart_from_those_on_fewer_rows():
    passes = [("forward", 4, 0.2), ("backward", 4, 0.4), ("graphed", 2, 0.1)]
    floor = (0.025, 0.04, 0.05)   # seconds per row: forward, graphed, backward
    # full pool: 4 × 0.025 + 4 × 0.05 = 0.3 s at the floor's rates in 0.6 s; fewer rows: 2 × 0.04 = 0.08 s in 0.1 s
    assert bench.rates_by_width(passes, floor, width=4) == [
        "passes on a full pool of 4 (80% of the rows) ran at 50% of the floor's rates",
        "passes on fewer rows (20% of the rows) ran at 80% of the floor's rates"]
    assert bench.rates_by_width(passes[:2], floor, width=4) == [
        "passes on a full pool of 4 (100% of the rows) ran at 50% of the floor's rates"]


def test_bench_split_prints_how_much_of_our_attacks_time_their_passes_take(capsys):
    bench.main(["--images", "8", "--device", "cpu", "--split", "--cw-budgets", "paper", "--image-size", "16", "--batch-size", "4"])
    printed = capsys.readouterr().out
    for attack in ("deepfool", "cw"):
        assert f"{attack} (ours): " in printed and "of its floor. Its model's passes took" in printed
    assert printed.count("passes on a full pool of 4 (") == 2   # a line for each attack


def test_bench_stream_runs_our_attacks_chunk_by_chunk_and_as_one_stream(capsys):
    bench.main(["--images", "40", "--device", "cpu", "--stream", "--cw-budgets", "paper", "--image-size", "16", "--batch-size", "4",
                "--deepfool-steps", "10"])
    printed = capsys.readouterr().out
    for attack in ("deepfool", "cw"):
        steps = {}
        for label in ("a call per chunk", "one stream"):
            found = re.search(rf"{attack} \(ours\), {label}: [\d.]+ images/s, (\d+) steps, (\d+) of them on a full "
                              r"pool of 4, (\d+) rows stepped", printed)
            assert found, printed
            steps[label] = [int(number) for number in found.groups()]
        (chunked, chunked_full, chunked_rows), (streamed, streamed_full, streamed_rows) = steps.values()
        # the same rows stepped, in fewer steps: the pool drains once instead of once per chunk
        assert streamed_rows == chunked_rows and streamed < chunked and streamed - streamed_full < chunked - chunked_full
    assert printed.count("3 chunks of 16; the same queries per sample: True") == 2


def test_bench_prints_the_share_of_its_floor_for_every_row(capsys):
    table = bench.main(["--images", "8", "--batch-size", "4", "--image-size", "16", "--rs-n", "100", "--repeats", "1",
                        "--rs-images", "1", "--torchattacks-images", "2", "--deepfool-steps", "10", "--fmn-steps", "10",
                        "--skip", "adv-lib"])   # adv-lib is the bench's to install (make bench), not the tests'
    printed = capsys.readouterr().out
    assert "of floor" in printed and "floor per image: a forward pass" in printed
    assert len(table) == 20 and table["of floor"].between(0, float("inf"), inclusive="neither").all(), table
    assert (table["passes/img"] > 0).all()
    by_method = table.set_index("method")
    # foolbox runs one forward and one backward pass per candidate and step, for every sample until the last flips
    assert by_method.loc["foolbox L2DeepFoolAttack", "passes/img"] > by_method.loc["deepfool (ours)", "passes/img"]
    # smoothing's rows: forward passes alone, N + N0 of ours and the loop's two more (its tally's shape)
    assert by_method.loc["rs (ours, N=100, fp32)", "passes/img"] == 200
    assert by_method.loc["Cohen-style certify loop", "passes/img"] == 202
    # CW at both budgets, each against foolbox's at the same one; torchattacks' (c = 1) beside the paper's
    assert by_method.loc["foolbox L2CarliniWagnerAttack", "peer_of"] == "cw (ours)"
    assert by_method.loc["foolbox L2CarliniWagnerAttack (paper budget)", "peer_of"] == "cw (ours, paper budget)"
    assert by_method.loc["torchattacks CW (c=1)", "peer_of"] == "cw (ours, paper budget)"
    # each of our attacks again on channels-last images, in fp32 and searching in bf16, against its eager row
    for attack in ("deepfool", "cw", "fmn"):
        for variant in ("channels-last", "bf16, channels-last"):
            assert f"{attack} (ours, {variant}): " in printed and "× ours" in printed
            assert by_method.loc[f"{attack} (ours, {variant})", "success"] == by_method.loc[f"{attack} (ours)", "success"]
    # FMN with its opt-in stopping rule, against the full run: fewer passes per image, distances ÷ the full run's
    assert "fmn (ours, patience 10): " in printed
    assert by_method.loc["fmn (ours, patience 10)", "passes/img"] <= by_method.loc["fmn (ours)", "passes/img"]


def test_the_bench_gives_the_peers_our_cw_budget_per_input_value():
    assert bench.peer_budget(CarliniWagner(**PAPER_BUDGET), 3 * 32 * 32) == {
        "binary_search_steps": 5, "steps": 100, "initial_const": 0.01, "learning_rate": 5e-3}
    default = bench.peer_budget(CarliniWagner(), 3 * 32 * 32)
    assert (default["binary_search_steps"], default["steps"]) == (10, 300)
    assert default["learning_rate"] == pytest.approx(0.4 / 3 ** 0.5 / 32)


def test_pipeline_bench_prints_each_attacks_share_of_its_floor(capsys):
    import pipeline

    table = pipeline.main(["--models", "small_cnn", "--image-size", "16", "--train-steps", "2", "--audit-images", "8",
                           "--attack-batch", "4", "--rs-n", "20", "--rs-images", "1"])
    printed = capsys.readouterr().out
    for column in ("deepfool_of_floor", "cw_of_floor", "rs_of_floor"):
        assert column in printed and 0 < table[column].iloc[0] < float("inf"), column


def test_pipeline_bench_projects_the_quick_tier_per_seed_from_its_measured_rates(capsys):
    """--quick-tier: logistic regression and the UTK classifier at 32 px, CW at its default budget; each stage's
    minutes are the tier's images over the measured images/s (smoothing scaled to N = 1,000)."""
    import pipeline

    table = pipeline.main(["--quick-tier", "--train-steps", "2", "--audit-images", "4", "--attack-batch", "4",
                           "--rs-n", "20", "--rs-images", "1"])
    printed = capsys.readouterr().out
    assert list(table["model"]) == ["logreg", "utk_classifier"] and "per seed:" in printed
    for row in table.to_dict("records"):
        assert row["train_min"] == pytest.approx(3 * 16599 / row["train_img_s"] / 60)
        assert row["deepfool_min"] == pytest.approx(3 * 577 / row["deepfool_img_s"] / 60)
        assert row["cw_min"] == pytest.approx(289 / row["cw_img_s"] / 60)
        assert row["rs_min"] == pytest.approx(289 * 1100 / 120 / row["rs_img_s"] / 60)
        assert row["cw_queries"] > 0 and row["total_min"] == pytest.approx(
            row["train_min"] + row["deepfool_min"] + row["cw_min"] + row["rs_min"])


STEADY_ALLOCATOR_PROBE = """
import ctypes, sys, torch
from robustness_bias.allocator import steady_cpu_allocator
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "steady":
    assert steady_cpu_allocator()
before = libc.mallinfo2().hblkhd
buffer = torch.ones(4_000_000)   # 16 MB, an activation of a CPU attack's batch
print(libc.mallinfo2().hblkhd - before)
"""


def glibc_version() -> tuple[int, ...]:
    name, version = platform.libc_ver()
    return tuple(int(part) for part in version.split(".")) if name == "glibc" and version else (0,)


@pytest.mark.skipif(glibc_version() < (2, 33), reason="mallopt is glibc's, and the probe's mallinfo2 needs 2.33")
@pytest.mark.parametrize("allocator, mmapped", [("default", True), ("steady", False)])
def test_steady_allocator_serves_activation_sized_buffers_from_the_heap(allocator, mmapped):
    """glibc maps a fresh 16 MB block from the kernel (and page-faults it) on every allocation until
    its threshold has risen; fixed at 32 MiB, it serves the block from the heap from the start.
    A fresh process each, since the setting is process-wide."""
    probe = subprocess.run([sys.executable, "-c", STEADY_ALLOCATOR_PROBE, allocator],
                           capture_output=True, text=True, check=True)
    assert (int(probe.stdout) >= 16_000_000) is mmapped


def test_the_bench_trains_the_papers_utk_classifier_to_classify_held_out_digits():
    """``make bench`` attacks the paper's face model by default: its learning rate must train it (at the
    small CNN's rate it learns nothing). The pool of inputs starts with the held-out digits."""
    model, pool_x, pool_y = bench.trained_model("utk_classifier", 32, "cpu", epochs=2)
    held_out = slice(0, 300)
    with torch.no_grad():
        accuracy = (model(pool_x[held_out]).argmax(1) == pool_y[held_out]).float().mean()
    assert accuracy >= 0.8


def test_the_pipeline_bench_trains_on_real_faces_in_a_shuffled_order(tmp_path):
    """UTKFace's file names start with the age, so the split's training faces come sorted by age bin: trained in
    that order the model collapsed to one class, and the attacks the bench timed could flip nothing."""
    import pipeline
    from test_face_datasets import jpeg_bytes   # tests/, on the path as pytest runs them

    root = tmp_path / "UTKFace"
    root.mkdir()
    for i, age in enumerate(sorted([5, 20, 30, 50, 70] * 8)):
        (root / f"{age}_{i % 2}_{i % 5}_2017010{i:010d}.jpg.chip.jpg").write_bytes(jpeg_bytes(i, size=16))
    images, labels = pipeline.utkface_images(str(root), 8, 16)
    assert images.shape == (16, 3, 8, 8) and len(set(labels[:8].tolist())) >= 3, labels
