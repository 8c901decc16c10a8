"""Our estimators against foolbox, torchattacks, adv-lib and the reference certify loop, in one process.

Same model, same correctly classified inputs for everyone. Prints one table: images/s, the share of
its arithmetic floor each method reaches, our speed over each peer's, success rate, median distance
(failures count as +inf), the median of our distance over the peer's on the samples both solved, and
each attack's median over the samples of its distance ÷ the smallest any attack row found for the sample
("÷ best": how far it overstates the tightest upper bound we have).

The floor of a row is the time its forward and backward passes would take at the model's measured
full-batch rates, each kind timed on its own (none assumed to cost some multiple of another): forward
passes without a graph, forward passes that keep one, and backward passes to the inputs through a kept
graph, each at the faster of our attacks' pool width and all the inputs at once; smoothing's forward
passes at the fastest batch its probe finds. Every pass a method runs counts: ours say theirs per
sample (``Estimator.passes``: their queries, and DeepFool's graph-keeping pass after each check, which
repeats the check at the same point); a peer's are counted by a wrapper around the model
(peers.Counted), so work on samples it has already finished counts towards its floor too (ours run
none). Our faster rows (channels-last, bf16, compiled) count against the same floor, that of the eager passes.

    python bench/estimators.py                                  # the paper's face model at 32 px (make bench)
    python bench/estimators.py --model small_cnn                # a small CNN: quicker, a toy
    python bench/estimators.py --model resnet50 --image-size 32 --device cuda --images 512
    python bench/estimators.py --model resnet50 --image-size 224 --device cuda --rs-n 10000
    python bench/estimators.py --rs-compile                     # smoothing through torch.compile
    python bench/estimators.py --no-faster                      # without our attacks' channels-last and bf16 rows
    python bench/estimators.py --compiled                       # also our attacks through torch.compile
    python bench/estimators.py --split                          # our attacks' time in their model's passes (CPU)
    python bench/estimators.py --stream --images 2000           # a call per chunk against one stream of chunks
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402

from robustness_bias.data import DigitsDataModule  # noqa: E402
from robustness_bias.estimators import CarliniWagner, DeepFool, RandomizedSmoothing  # noqa: E402
from robustness_bias.estimators.cw import PAPER_BUDGET  # noqa: E402
from robustness_bias.estimators.fmn import FastMinimumNorm  # noqa: E402
from robustness_bias.estimators.base import frozen, is_channels_last  # noqa: E402
from robustness_bias import models  # noqa: E402
from robustness_bias.allocator import steady_cpu_allocator  # noqa: E402
from robustness_bias.auditing.engine import compiling  # noqa: E402


def digits_images(image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's real 8×8 digits, upsampled to RGB ``image_size``² images in [0,1]."""
    digits = DigitsDataModule(normalization={"mean": [0.5], "std": [0.5]}).load()
    images = torch.nn.functional.interpolate(digits.images, size=image_size, mode="bilinear", align_corners=False)
    return images.clamp(0, 1).repeat(1, 3, 1, 1), torch.as_tensor(digits.labels)


# the small CNN's 0.05 leaves ResNet-50 and the UTK classifier untrained (docs/benchmarks.md)
LEARNING_RATES = {"small_cnn": 0.05, "resnet50": 0.01, "utk_classifier": 0.01}


def trained_model(name: str, image_size: int, device: str, epochs: int = 4, seed: int = 0):
    """A model trained briefly on 1,400 real digits, and a pool of inputs to attack: the ~400 held-out
    digits first, then the training digits (a GPU batch of 512 needs more than the held-out ones)."""
    torch.manual_seed(seed)
    shape = (3, image_size, image_size)
    norm = {"mean": [0.3] * 3, "std": [0.4] * 3}
    model = getattr(models, name)(shape, 10, norm)   # the pipeline's own builders
    model = model.to(device)
    images, labels = digits_images(image_size)
    order = torch.randperm(len(images))
    images, labels = images[order].to(device), labels[order].to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATES[name], momentum=0.9)
    model.train()
    for _ in range(epochs):
        for start in range(0, 1400, 50):
            loss = torch.nn.functional.cross_entropy(model(images[start:start + 50]), labels[start:start + 50])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval(), images.roll(-1400, 0), labels.roll(-1400, 0)


def correct_inputs(model, images, labels, count):
    with torch.no_grad():
        keep = torch.cat([model(images[i:i + 256]).argmax(1) for i in range(0, len(images), 256)]) == labels
    return images[keep][:count], labels[keep][:count]


def timed(device: str, fn, *args):
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn(*args)
    if device == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def ours(estimator, batch_size: int | None = None, precision: str = "fp32"):
    """Our estimator as a peer's function that returns its whole result, working on ``batch_size`` samples at
    once (the attacks' pool width) under autocast at ``precision``, as an audit's plan runs it."""
    def measure(model, x, y):
        with autocast(x.device.type, precision):
            return estimator(model, x, y, index=torch.arange(len(x)), batch_size=batch_size)
    return measure


def on_compiled(measure, compiled):
    """``measure`` on ``compiled`` (the model through torch.compile, whichever model it is handed) as an audit
    under ``audit.plan.<attack>.compile`` runs it (auditing/engine.py, compiling)."""
    def measure_compiled(model, x, y):
        with compiling(compiled):
            return measure(compiled, x, y)
    return measure_compiled


def seconds_per_row(device: str, fn, rows: int, seconds: float, windows: int = 5) -> float:
    """Seconds per row of ``fn`` on a batch of ``rows``, after a warm-up: the fastest of ``windows`` windows
    of at least ``seconds / windows`` each (other load on the machine only ever slows one down)."""
    timed(device, fn)
    fastest = math.inf
    for _ in range(windows):
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / windows or done < 2:
            timed(device, fn)
            done += 1
        fastest = min(fastest, (time.perf_counter() - start) / (done * rows))
    return fastest


def pass_seconds(model, x, device: str, widths, seconds: float = 0.5) -> tuple[float, float, float]:
    """Seconds per image of a forward pass without a graph, of one that keeps its graph and of a backward
    pass to the inputs through a kept graph (parameters frozen, as in our attacks), each at whichever batch
    of ``widths`` rows of ``x`` runs it fastest: the rates of the attacks' arithmetic floor."""
    forward = graphed = backward = math.inf
    with frozen(model):
        for width in sorted(set(widths)):
            batch = x[torch.arange(width, device=x.device) % len(x)]
            if is_channels_last(x):
                batch = batch.contiguous(memory_format=torch.channels_last)
            with torch.no_grad():
                forward = min(forward, seconds_per_row(device, lambda: model(batch), width, seconds))
            inputs = batch.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                graphed = min(graphed, seconds_per_row(device, lambda: model(inputs), width, seconds))
                out = model(inputs)
            direction = torch.randn_like(out)
            backward = min(backward, seconds_per_row(
                device, lambda: torch.autograd.grad(out, inputs, direction, retain_graph=True), width, seconds))
    return forward, graphed, backward


def autocast(device: str, precision: str):
    return torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16")


def forward_rate(model, x, device, precision: str, seconds: float, batch_size: int) -> float:
    """Raw forward-pass throughput (images/s) on batches of ``batch_size`` copies of the inputs."""
    batch = x[:1].repeat(batch_size, 1, 1, 1) if len(x) else x
    if is_channels_last(x):
        batch = batch.contiguous(memory_format=torch.channels_last)   # as smoothing's buffer: no recompilation
    with torch.no_grad(), autocast(device, precision):
        timed(device, model, batch)  # warm-up
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            timed(device, model, batch)
            done += len(batch)
        return done / (time.perf_counter() - start)


def smoothing_batches(smoothing: RandomizedSmoothing, model, x, precision: str = "fp32") -> tuple[int, int]:
    """The forward batch smoothing runs at (measured here, outside any timing, unless it is set) and the
    fastest one smoothing's probe finds, where its floor is measured: a floor at any other batch would be
    lower than the device allows."""
    with autocast(x.device.type, precision):
        runs_at = smoothing.forward_batch_for(model, x)
        return runs_at, runs_at if smoothing.forward_batch is None else smoothing.probe(model, x).batch


# CW's budgets: the default (conf/estimator/cw.yaml) and the paper's (conf/estimator/cw_paper.yaml)
CW_BUDGETS = {"default": {}, "paper": PAPER_BUDGET}


def our_attacks(deepfool_steps: int, names: list[str], cw_budget: str = "default"):
    """(name, attack) of our DeepFool and CW, those in ``names``, as ``--profile`` and ``--split`` run them."""
    attacks = {"deepfool": DeepFool(steps=deepfool_steps), "cw": CarliniWagner(**CW_BUDGETS[cw_budget])}
    return [(name, attacks[name]) for name in names]


def peer_budget(cw: CarliniWagner, dimensions: int) -> dict:
    """foolbox's and adv-lib's CW arguments for our ``cw``'s budget: the same binary-search steps, Adam steps,
    initial constant and learning rate per input value (ours set per dimension, at these inputs' size)."""
    return {"binary_search_steps": cw.binary_search_steps, "steps": cw.steps, "initial_const": cw.initial_const,
            "learning_rate": cw.rate(dimensions)}


def cw_names(budget: str) -> tuple[str, str, str, str]:
    """The rows of one CW budget: ours, ours with CUDA graphs, foolbox's and adv-lib's (the default's keep
    the names they had before the paper's budget got rows of its own)."""
    tag = "" if budget == "default" else f" ({budget} budget)"
    ours = "cw (ours)" if budget == "default" else f"cw (ours, {budget} budget)"
    graphed = "cw (ours, cuda graphs)" if budget == "default" else f"cw (ours, cuda graphs, {budget} budget)"
    return ours, graphed, f"foolbox L2CarliniWagnerAttack{tag}", f"adv-lib carlini_wagner_l2{tag}"


def profile_attacks(model, x, y, device: str, deepfool_steps: int, names: list[str], batch_size: int,
                    cw_budget: str = "default") -> None:
    """Where our DeepFool's and CW's time goes: the operators that cost most, and the device's and the
    host's totals, which against the wall time tell a launch-bound attack from a compute-bound one."""
    from torch.profiler import ProfilerActivity, profile

    on_gpu = device == "cuda"
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if on_gpu else [])]
    for name, attack in our_attacks(deepfool_steps, names, cw_budget):
        ours(attack)(model, x[:4], y[:4])   # warm-up
        with profile(activities=activities) as prof:
            result, seconds = timed(device, ours(attack, batch_size), model, x, y)
        queries = result.queries.float()
        print(f"\n{name} (ours) under the profiler: {len(x) / seconds:.1f} images/s, {seconds:.2f} s wall; queries per "
              f"image: mean {queries.mean():.0f}, max {queries.max():.0f} (the table's totals against the wall time)")
        if name == "deepfool":   # a sample that flipped after s steps made s backward passes per other candidate
            others = min(attack.candidates, int(model(x[:1]).shape[1])) - 1
            steps = (attack.passes(result, others + 1).backward // others)[result.success].cpu()
            print(f"DeepFool steps per flipped sample: median {steps.median():.0f}, 90th percentile "
                  f"{steps.float().quantile(0.9):.0f}, max {steps.max():.0f}; still active after 1, 2, 5, 10, "
                  "20 steps: " + ", ".join(str(int((steps > s).sum())) for s in (1, 2, 5, 10, 20)))
        print(prof.key_averages().table(sort_by="self_device_time_total" if on_gpu else "self_cpu_time_total",
                                        row_limit=12))


def split_attacks(model, x, y, device: str, deepfool_steps: int, names: list[str], batch_size: int,
                  cw_budget: str = "default") -> None:
    """Our DeepFool's and CW's share of their floor as the product of two: the share of the attack's time
    that its model's passes take (timed inside the attack, peers.Timed), and how near the floor's rates those
    passes run there; beside them, the floor of the passes the attack counts (``Estimator.passes``), which
    equals that of the passes timed. On a CPU, where a pass has ended when its call returns."""
    floor = pass_seconds(model, x, device, (min(batch_size, len(x)), len(x)))
    timed_model = peers.Timed(model)
    with torch.no_grad():
        classes = int(model(x[:1]).shape[1])
    for name, attack in our_attacks(deepfool_steps, names, cw_budget):
        ours(attack, batch_size)(timed_model, x[:1], y[:1])   # warm-up
        timed_model.reset()
        result, seconds = timed(device, ours(attack, batch_size), timed_model, x, y)
        ran = (timed_model.forward_rows, timed_model.graphed_rows, timed_model.backward_rows)
        passes = timed_model.forward_seconds + timed_model.backward_seconds
        ran_at_floor = sum(n * t for n, t in zip(ran, floor))
        counted_at_floor = sum(int(n.sum()) * t for n, t in zip(attack.passes(result, classes), floor))
        print(f"{name} (ours): {seconds:.2f} s, {counted_at_floor / seconds:.0%} of its floor. Its model's passes took "
              f"{passes:.2f} s ({passes / seconds:.0%} of the time: forward {timed_model.forward_seconds:.2f} s, "
              f"backward {timed_model.backward_seconds:.2f} s); at the floor's rates they take {ran_at_floor:.2f} s "
              f"({ran_at_floor / passes:.0%}), the passes it counts {counted_at_floor:.2f} s", flush=True)
        print("  " + "; ".join(rates_by_width(timed_model.passes, floor, batch_size)), flush=True)


def rates_by_width(passes: list[tuple[str, int, float]], floor: tuple[float, float, float], width: int) -> list[str]:
    """How near the floor's rates a Timed model's ``passes`` ran, those on a full pool of ``width`` rows apart
    from those on fewer (as the pool drains, or admits a few rows): whether the queue's end or the passes
    themselves fall short of the floor's tight loops."""
    seconds_per_row = dict(zip(("forward", "graphed", "backward"), floor))
    rows_in_all = sum(rows for _, rows, _ in passes)
    parts = []
    for label, full in ((f"on a full pool of {width}", True), ("on fewer rows", False)):
        chosen = [(kind, n, took) for kind, n, took in passes if (n == width) == full]
        rows = sum(n for _, n, _ in chosen)
        if rows:
            at_floor = sum(seconds_per_row[kind] * n for kind, n, _ in chosen)
            parts.append(f"passes {label} ({rows / rows_in_all:.0%} of the rows) ran at "
                         f"{at_floor / sum(took for _, _, took in chosen):.0%} of the floor's rates")
    return parts


def stream_attacks(model, x, y, device: str, deepfool_steps: int, names: list[str], batch_size: int,
                   cw_budget: str = "default") -> None:
    """Our DeepFool and CW over an audit's chunks (4× the pool each), run a call per chunk, as audits ran
    them before, and as one stream through one pool, as audits run them now: the time, and the steps each
    took (its forward passes that keep a graph: a DeepFool move, a CW Adam step), how many of them on a full
    pool. On a GPU whose steps wait on kernel launches, a step costs about the same at any width."""
    chunk = 4 * batch_size
    starts = range(0, len(x), chunk)
    counted = peers.Counted(model)
    for name, attack in our_attacks(deepfool_steps, names, cw_budget):
        ours(attack)(counted, x[:4], y[:4])   # warm-up

        def per_chunk():
            return [attack(counted, x[s:s + chunk], y[s:s + chunk], batch_size=batch_size) for s in starts]

        def streamed():
            chunks = ((x[s:s + chunk], y[s:s + chunk], torch.arange(s, min(s + chunk, len(x)))) for s in starts)
            return [result for _, result in sorted(attack.stream(counted, chunks, batch_size), key=lambda r: r[0])]

        runs = {}
        for label, run in (("a call per chunk", per_chunk), ("one stream", streamed)):
            counted.reset()
            results, seconds = timed(device, run)
            widths = counted.graphed_widths
            runs[label] = torch.cat([r.queries for r in results])
            print(f"{name} (ours), {label}: {len(x) / seconds:.1f} images/s, {len(widths)} steps, "
                  f"{sum(w == batch_size for w in widths)} of them on a full pool of {batch_size}, "
                  f"{sum(widths)} rows stepped", flush=True)
        print(f"  {len(starts)} chunks of {chunk}; the same queries per sample: "
              f"{torch.equal(*runs.values())}", flush=True)


def row(method, peer_of, distances, seconds, count, passes, floor):
    """A failure is +inf (attacks) or a zero radius (smoothing): neither counts as solved. ``passes``: the
    forward passes, those keeping a graph and the backward passes the method ran; ``floor``: which floor's
    seconds per pass they count at (``"attacks"`` or ``"smoothing"``), filled in once all rows have run."""
    d = distances.numpy()
    return {"method": method, "peer_of": peer_of, "images": count, "seconds": seconds, "images/s": count / seconds,
            "of floor": np.nan, "passes/img": sum(passes) / count,
            "success": float((np.isfinite(d) & (d > 0)).mean()), "median L2": float(np.median(d)), "_d": d,
            "_passes": passes, "_floor": floor}


def floor_shares(rows: list[dict], floors: dict[str, tuple[float, float, float]]) -> None:
    """Each row's share of its floor: the time its passes take at the floor's seconds per pass of each kind,
    over the time it took."""
    for r in rows:
        r["of floor"] = sum(n * t for n, t in zip(r["_passes"], floors[r["_floor"]])) / r["seconds"]


def best_ratios(rows: list[dict]) -> None:
    """Each attack row's median, over its samples, of its distance ÷ the smallest distance any attack row
    found for that sample (failures count as +inf: a ratio of +inf). Smoothing's rows, lower bounds, are
    not attacks and get none."""
    attacks = [r for r in rows if r["_floor"] == "attacks"]
    longest = max(len(r["_d"]) for r in attacks)
    best = np.full(longest, np.inf)
    for r in attacks:
        best[:len(r["_d"])] = np.minimum(best[:len(r["_d"])], np.where(r["_d"] > 0, r["_d"], np.inf))
    for r in attacks:
        n = len(r["_d"])
        with np.errstate(invalid="ignore"):
            ratio = np.where(np.isfinite(best[:n]), r["_d"] / best[:n], np.nan)
        r["÷ best"] = float(np.nanmedian(ratio)) if np.isfinite(best[:n]).any() else np.nan


def compare(rows: list[dict]) -> pd.DataFrame:
    """Add our speed over each peer's and the median distance ratio on the samples both solved."""
    best_ratios(rows)
    by_method = {r["method"]: r for r in rows}
    for r in rows:
        if r["peer_of"]:
            mine = by_method[r["peer_of"]]
            n = r["images"]
            r["ours ÷ peer speed"] = mine["images/s"] / r["images/s"]
            both = np.isfinite(mine["_d"][:n]) & np.isfinite(r["_d"]) & (mine["_d"][:n] > 0) & (r["_d"] > 0)
            r["median ours/peer L2"] = float(np.median(mine["_d"][:n][both] / r["_d"][both])) if both.any() else np.nan
    return pd.DataFrame(rows).drop(columns=["_d", "_passes", "_floor"])


# Our attacks again on faster passes (--faster): channels-last images, then also a search under bf16 autocast whose
# verdicts run in fp32 (estimators/verdicts.py, full_precision)
FASTER = (("fp32", "channels-last"), ("bf16", "bf16, channels-last"))


def faster_summary(rows: list[dict], faster_of: dict[str, str], adv_lib_of: dict[str, str]) -> None:
    """Each faster row against its eager row (speed, and its distances' ratios on the samples both solved:
    the tolerance) and against adv-lib's attack of the same kind."""
    if not faster_of:
        return
    by_method = {r["method"]: r for r in rows}
    print("\nfaster passes: speed over our eager row and over adv-lib's; distances ÷ the eager row's (median, 5–95%, "
          "extremes) on the samples both solved")
    for method, eager in faster_of.items():
        fast, base = by_method[method], by_method[eager]
        peer = by_method.get(adv_lib_of.get(eager, ""))
        both = np.isfinite(fast["_d"]) & np.isfinite(base["_d"]) & (base["_d"] > 0)
        ratio = fast["_d"][both] / base["_d"][both]
        spread = (f"{np.median(ratio):.4f} [{np.quantile(ratio, 0.05):.4f}, {np.quantile(ratio, 0.95):.4f}], "
                  f"{ratio.min():.4f} to {ratio.max():.4f}" if both.any() else "no sample solved by both")
        against_peer = f", {fast['images/s'] / peer['images/s']:.2f}× {peer['method']}" if peer else ""
        print(f"  {method}: {fast['images/s'] / base['images/s']:.2f}× ours{against_peer}; distances ÷ eager {spread}; "
              f"success {fast['success']:.3f} (eager {base['success']:.3f})")


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="utk_classifier", choices=sorted(LEARNING_RATES),
                        help="utk_classifier: the paper's UTKFace classifier; small_cnn: a toy whose passes cost little "
                             "beside CW's own arithmetic (docs/benchmarks.md)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=256, help="inputs for DeepFool and CW")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="our attacks' pool width (audit.plan.<attack>.batch_size); the peers get all inputs at once")
    parser.add_argument("--torchattacks-images", type=int, default=32, help="torchattacks DeepFool is one image at a time")
    parser.add_argument("--deepfool-steps", type=int, default=50)
    parser.add_argument("--fmn-steps", type=int, default=100, help="steps of FMN (ours and adv-lib's) and adv-lib's DDN")
    parser.add_argument("--fmn-batch-size", type=int, default=256,
                        help="our FMN's pool width (audit.plan.fmn.batch_size)")
    parser.add_argument("--fmn-patience", type=int, default=10,
                        help="a row of our FMN with this stopping rule (estimator.fmn.patience; 0: no such row)")
    parser.add_argument("--alma-steps", type=int, default=1000, help="steps of adv-lib's ALMA")
    parser.add_argument("--rs-images", type=int, default=16,
                        help="inputs smoothing and the certify loop certify (at 4, one timed call each did not rank them)")
    parser.add_argument("--rs-n", type=int, default=10_000)
    parser.add_argument("--rs-precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--rs-forward-batch", type=int, default=None,
                        help="noisy images per forward pass (default: the fastest, measured as an audit does)")
    parser.add_argument("--channels-last", action="store_true", help="model and inputs in channels-last memory format")
    parser.add_argument("--rs-compile", action="store_true", help="torch.compile smoothing's forward passes")
    parser.add_argument("--faster", action=argparse.BooleanOptionalAction, default=True,
                        help="also our attacks on channels-last images, in fp32 and with a bf16 search (fp32 verdicts)")
    parser.add_argument("--compiled", action="store_true",
                        help="also our DeepFool, CW (default budget) and FMN through torch.compile, as "
                             "audit.plan.<attack>.compile runs them; compiled in a warm-up call on all inputs")
    parser.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=None,
                        help="add rows for our attacks with cuda_graphs=True (default: on a GPU; elsewhere they run eagerly)")
    parser.add_argument("--skip", nargs="*", default=[], help="peers to leave out: torchattacks, foolbox, adv-lib, cohen")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed calls per method after its warm-up; the table keeps the fastest")
    parser.add_argument("--cw-budgets", nargs="+", choices=sorted(CW_BUDGETS), default=["default", "paper"],
                        help="CW's budgets to run, ours and foolbox's and adv-lib's at each (the first also for "
                             "--profile, --split and --stream): default (conf/estimator/cw.yaml), paper (cw_paper.yaml)")
    parser.add_argument("--profile", nargs="*", choices=["deepfool", "cw"], default=None,
                        help="instead of the table: profile our DeepFool and CW (or those named) on the same inputs")
    parser.add_argument("--split", nargs="*", choices=["deepfool", "cw"], default=None,
                        help="instead of the table: the time our DeepFool's and CW's (or those named) model passes take "
                             "inside the attack, against the floor's rates (CPU)")
    parser.add_argument("--stream", nargs="*", choices=["deepfool", "cw"], default=None,
                        help="instead of the table: our DeepFool and CW (or those named) over chunks 4× the pool, a "
                             "call per chunk against one stream through one pool: time and steps")
    args = parser.parse_args(argv)
    if args.split is not None and args.device != "cpu":
        parser.error("--split times passes as their calls return, which a GPU does before it has run them: "
                     "use --device cpu")

    args.cuda_graphs = args.device == "cuda" if args.cuda_graphs is None else args.cuda_graphs
    steady = steady_cpu_allocator()   # every row in the allocator's warm state, whatever ran before it
    torch.backends.cudnn.benchmark = True
    model, pool_x, pool_y = trained_model(args.model, args.image_size, args.device)
    x, y = correct_inputs(model, pool_x, pool_y, args.images)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    print(f"{args.model} {args.image_size}px on {args.device}: {len(x)} correctly classified inputs, our attacks' pool "
          f"{args.batch_size} wide; malloc's mmap threshold "
          f"{'fixed at 32 MiB' if steady else 'left as it was (not glibc)'}", flush=True)
    if args.profile is not None:
        profile_attacks(model, x, y, args.device, args.deepfool_steps, args.profile or ["deepfool", "cw"],
                        args.batch_size, args.cw_budgets[0])
        return pd.DataFrame()
    if args.split is not None:
        split_attacks(model, x, y, args.device, args.deepfool_steps, args.split or ["deepfool", "cw"], args.batch_size,
                      args.cw_budgets[0])
        return pd.DataFrame()
    if args.stream is not None:
        stream_attacks(model, x, y, args.device, args.deepfool_steps, args.stream or ["deepfool", "cw"],
                       args.batch_size, args.cw_budgets[0])
        return pd.DataFrame()
    with torch.no_grad():
        classes = int(model(x[:1]).shape[1])
    widths = (min(args.batch_size, len(x)), len(x))
    # the attacks' floor, measured before and after the rows: the faster of the two counts, since other load on
    # the machine only ever slows a measurement down
    attack_floor = pass_seconds(model, x, args.device, widths)
    counted = peers.Counted(model)   # the peers' model: it counts the passes they run
    rows = []

    def run(method, peer_of, fn, xs, ys, estimator=None, floor="attacks", warm_up_on_all=False):
        """Time ``fn`` after a warm-up on one input, or with ``warm_up_on_all`` (CUDA graphs, torch.compile) on all
        of them: that call captures the graphs (compiles the shapes) an audit's first chunk would, and the timed
        ones replay them.
        The fastest of ``--repeats`` timed calls counts. ``estimator``: ours, which counts its passes
        (``Estimator.passes``); else a peer, which gets the counted model."""
        target = model if estimator is not None else counted
        warm = timed(args.device, fn, target, *((xs, ys) if warm_up_on_all else (xs[:1], ys[:1])))[1]
        seconds = math.inf
        for _ in range(args.repeats):
            counted.reset()
            out, took = timed(args.device, fn, target, xs, ys)
            seconds = min(seconds, took)
        if estimator is not None:
            passes = [int(kind.sum()) for kind in estimator.passes(out, classes)]
            distances = out.distance.cpu()
        else:
            passes, distances = [counted.forward_rows, counted.graphed_rows, counted.backward_rows], out
        rows.append(row(method, peer_of, distances, seconds, len(xs), passes, floor))
        print(f"  {method}: {len(xs) / seconds:.1f} images/s, {rows[-1]['passes/img']:.1f} passes per image"
              + (f" (the warm-up call on all inputs: {len(xs) / warm:.1f})" if warm_up_on_all else ""), flush=True)

    def attack(method, make, peer_of=None, batch_size=args.batch_size, faster=False, **kwargs):
        """Our attack from ``make``; with ``faster`` again through torch.compile (--compiled), on the floor of the
        eager passes, and (with --faster) on each of the FASTER passes."""
        estimator = make()
        run(method, peer_of, ours(estimator, batch_size), x, y, estimator=estimator, **kwargs)
        if faster and compiled is not None:
            estimator = make()
            run(f"{method[:-1]}, compiled)", None, on_compiled(ours(estimator, batch_size), compiled), x, y,
                estimator=estimator, warm_up_on_all=True)
            faster_of[rows[-1]["method"]] = method
        if not (faster and args.faster) or args.channels_last:
            return
        for precision, variant in FASTER:   # the same attack on faster passes: docs/design.md, "Faster passes"
            estimator = make()
            run(f"{method[:-1]}, {variant})", None, ours(estimator, batch_size, precision), x_channels_last, y,
                estimator=estimator)
            faster_of[rows[-1]["method"]] = method

    x_channels_last = x.contiguous(memory_format=torch.channels_last)
    compiled = torch.compile(model) if args.compiled else None   # once, for every attack, as in an audit
    faster_of: dict[str, str] = {}   # each faster row's eager row
    attack("deepfool (ours)", lambda: DeepFool(steps=args.deepfool_steps), faster=True)
    for mode in ("batched", "replicated"):   # the other ways to the candidates' gradients
        attack(f"deepfool (ours, {mode})", lambda: DeepFool(steps=args.deepfool_steps, gradients=mode))
    if args.cuda_graphs:
        attack("deepfool (ours, cuda graphs)", lambda: DeepFool(steps=args.deepfool_steps, cuda_graphs=True),
               warm_up_on_all=True)
    if "foolbox" not in args.skip:
        run("foolbox L2DeepFoolAttack", "deepfool (ours)", lambda m, a, b: peers.foolbox_deepfool(m, a, b, steps=args.deepfool_steps), x, y)
    if "torchattacks" not in args.skip:
        k = args.torchattacks_images
        run("torchattacks DeepFool", "deepfool (ours)", lambda m, a, b: peers.torchattacks_deepfool(m, a, b, steps=args.deepfool_steps), x[:k], y[:k])
    for budget in args.cw_budgets:   # each budget against foolbox's CW at the same one (adv-lib's: below)
        settings, (name, graphed, foolbox_name, _) = CW_BUDGETS[budget], cw_names(budget)
        attack(name, lambda: CarliniWagner(**settings), faster=budget == "default")
        if args.cuda_graphs:
            attack(graphed, lambda: CarliniWagner(**settings, cuda_graphs=True), warm_up_on_all=True)
        same = peer_budget(CarliniWagner(**settings), x[0].numel())
        if "foolbox" not in args.skip:
            run(foolbox_name, name, lambda m, a, b: peers.foolbox_cw(m, a, b, **same), x, y)
        if "torchattacks" not in args.skip and budget == "paper":   # its c = 1 and 100 steps at 5e-3
            run("torchattacks CW (c=1)", name, peers.torchattacks_cw, x, y)
    attack("fmn (ours)", lambda: FastMinimumNorm(steps=args.fmn_steps), batch_size=args.fmn_batch_size, faster=True)
    if args.fmn_patience:   # the opt-in stopping rule: its speed and its distances ÷ the full run's
        attack(f"fmn (ours, patience {args.fmn_patience})",
               lambda: FastMinimumNorm(steps=args.fmn_steps, patience=args.fmn_patience), batch_size=args.fmn_batch_size)
        faster_of[rows[-1]["method"]] = "fmn (ours)"
    if "adv-lib" not in args.skip and peers.adv_lib_attacks() is None:
        print("  adv-lib is not installed: its rows are skipped (make bench installs it)", flush=True)
    elif "adv-lib" not in args.skip:
        run("adv-lib df", "deepfool (ours)", lambda m, a, b: peers.adv_lib_deepfool(m, a, b, steps=args.deepfool_steps),
            x, y)
        for budget in args.cw_budgets:
            name, _, _, adv_lib_name = cw_names(budget)
            same = peer_budget(CarliniWagner(**CW_BUDGETS[budget]), x[0].numel())
            run(adv_lib_name, name, lambda m, a, b: peers.adv_lib_cw(m, a, b, **same), x, y)
        run(f"adv-lib fmn ({args.fmn_steps} steps)", "fmn (ours)",
            lambda m, a, b: peers.adv_lib_fmn(m, a, b, steps=args.fmn_steps), x, y)
        run(f"adv-lib ddn ({args.fmn_steps} steps)", "fmn (ours)",
            lambda m, a, b: peers.adv_lib_ddn(m, a, b, steps=args.fmn_steps), x, y)
        run(f"adv-lib alma ({args.alma_steps} steps)", "fmn (ours)",
            lambda m, a, b: peers.adv_lib_alma(m, a, b, steps=args.alma_steps), x, y)
    k = args.rs_images
    smoothing = RandomizedSmoothing(n=args.rs_n, compile=args.rs_compile, forward_batch=args.rs_forward_batch)
    runs_at, fastest = smoothing_batches(smoothing, model, x, args.rs_precision)
    print(f"  rs forward batch: {runs_at} ({'set' if args.rs_forward_batch else 'measured'}); its floor at {fastest}",
          flush=True)
    # the floor first: its warm-up also compiles smoothing's forward pass (--rs-compile) outside the timed call
    rate = forward_rate(smoothing.forward_of(model), x, args.device, args.rs_precision, 2.0, fastest)
    rs_method = f"rs (ours, N={args.rs_n}, {args.rs_precision})"
    # forward passes alone: neither smoothing nor the loop runs another kind
    run(rs_method, None, ours(smoothing, precision=args.rs_precision), x[:k], y[:k], estimator=smoothing,
        floor="smoothing")
    if "cohen" not in args.skip:   # the floor of smoothing's precision: the loop's fp32 passes count at that rate
        run("Cohen-style certify loop", rs_method, lambda m, a, b: peers.cohen_certify(m, a, b, n=args.rs_n), x[:k],
            y[:k], floor="smoothing")
    attack_floor = tuple(map(min, attack_floor, pass_seconds(model, x, args.device, widths)))
    forward, graphed, backward = (seconds * 1e3 for seconds in attack_floor)
    print(f"  the attacks' floor per image: a forward pass {forward:.3f} ms, one keeping its graph {graphed:.3f} ms, "
          f"a backward pass {backward:.3f} ms (each the faster of batches {widths[0]} and {widths[1]})", flush=True)
    if args.faster and not args.channels_last:   # what the channels-last rows' passes cost, beside the eager floor
        fast = (seconds * 1e3 for seconds in pass_seconds(model, x_channels_last, args.device, widths))
        print("  the same passes on channels-last images: {:.3f} ms, {:.3f} ms, {:.3f} ms".format(*fast), flush=True)
    floor_shares(rows, {"attacks": attack_floor, "smoothing": (1 / rate, 0.0, 0.0)})
    table = compare(rows)
    floor = rate / (args.rs_n + smoothing.n0)
    ours_rs = table.loc[table["method"] == rs_method, "images/s"].iloc[0]
    pd.set_option("display.width", 220)
    pd.set_option("display.max_columns", 20)
    print()
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    rate_of = dict(zip(table["method"], table["images/s"]))
    pairs = [("deepfool", "deepfool (ours, cuda graphs)", "foolbox L2DeepFoolAttack")]
    pairs += [(f"cw{'' if budget == 'default' else f' ({budget} budget)'}", *cw_names(budget)[1:3])
              for budget in args.cw_budgets]
    for name, graphed_row, peer in pairs:
        graphed = rate_of.get(graphed_row)
        if graphed and peer in rate_of:
            print(f"{name} with cuda graphs: {graphed / rate_of[peer]:.2f}× {peer}'s images/s")
    faster_summary(rows, faster_of, {"deepfool (ours)": "adv-lib df", cw_names("default")[0]: cw_names("default")[3],
                                      "fmn (ours)": f"adv-lib fmn ({args.fmn_steps} steps)"})
    print(f"\nforward pass ({args.rs_precision}{', compiled' if args.rs_compile else ''}, batch {fastest}): "
          f"{rate:,.0f} images/s → smoothing floor at N+N0={args.rs_n + smoothing.n0}: {floor:.3f} images/s; "
          f"ours (forward batch {runs_at}) reaches {ours_rs / floor:.0%} of it")
    return table


if __name__ == "__main__":
    main()
