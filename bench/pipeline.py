"""Training and audit throughput of the pipeline on this machine, and the hours the paper's UTKFace grid takes.

For each model of the grid: training images/s (SGD + momentum, batch 64, the pipeline's training
step), then DeepFool, Carlini–Wagner and randomized-smoothing images/s with the audit's settings on
correctly classified test images of the briefly trained model. The projection assumes the paper's
schedule (conf/paper/faces.yaml): 15 epochs; DeepFool + CW on the whole test set after the
first, middle and final epoch; smoothing at N = 100,000 on every 5th test image after the first and
the final epoch. Smoothing is timed at ``--rs-n`` noisy copies and scaled linearly to N + N0.
Beside each estimator's images/s, the share of its arithmetic floor it reached (as bench/estimators.py
measures it: its counted passes at the model's measured full-batch rates).

    python bench/pipeline.py                                        # make bench-pipeline
    python bench/pipeline.py --models utk_classifier --image-size 32 # a quick look on a CPU
    python bench/pipeline.py --quick-tier --data-dir /data/UTKFace --train-steps 100 --audit-images 64  # the quick tier
    python bench/pipeline.py --device cuda --precision bf16 --channels-last --compile smoothing --data-dir /data/UTKFace
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd
import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from estimators import correct_inputs, forward_rate, pass_seconds, smoothing_batches, timed  # noqa: E402

from robustness_bias.estimators import CarliniWagner, DeepFool, RandomizedSmoothing  # noqa: E402
from robustness_bias.estimators.cw import PAPER_BUDGET  # noqa: E402
from robustness_bias import models  # noqa: E402
from robustness_bias.allocator import steady_cpu_allocator  # noqa: E402

GRID_MODELS = ["utk_classifier", "resnet50", "alexnet", "vgg19_bn", "densenet121", "squeezenet1_0"]
# The paper's split: 23,705 usable UTKFace images, 80/20 split, 10% of the rest for validation.
TEST_IMAGES, TRAIN_IMAGES, EPOCHS = 4742, 17069, 15
ATTACK_AUDITS, SMOOTHING_AUDITS, SMOOTHING_EVERY, SMOOTHING_N, SMOOTHING_N0 = 3, 2, 5, 100_000, 100
CLASSES, NORMALIZATION = 5, {"mean": [0.5] * 3, "std": [0.25] * 3}
# The quick tier's cleaned split: 23,055 faces, 4,611 of them test faces, 16,599 trained on (docs/design.md, "Data
# cleaning"); the rest of its schedule is read from conf/experiment/utk_quick.yaml (quick_tier_schedule)
QUICK_TEST, QUICK_TRAIN = 4611, 16599


def quick_tier_schedule() -> dict:
    """The quick tier's models, epochs, and each estimator's share of the test faces and audits, as its experiment
    composes them."""
    from hydra import compose, initialize_config_dir

    from robustness_bias.config.messages import experiment_as_choice
    from robustness_bias.config.store import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=experiment_as_choice(["experiment=utk_quick"]),
                      return_hydra_config=True)
    plan = cfg.audit.plan
    return {"models": str(cfg.hydra.sweeper.params.model).split(","), "epochs": cfg.trainer.max_epochs,
            "every": {name: plan[name].every_nth for name in ("deepfool", "cw", "rs")},
            "audits": {name: len(plan[name].after) for name in ("deepfool", "cw", "rs")},
            "rs_n": cfg.estimator.rs.n, "rs_n0": cfg.estimator.rs.n0, "channels_last": plan.cw.channels_last}

def utkface_images(root: str, size: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` real UTKFace images of the seeded split's training faces (age bins as labels), at ``size``², in a
    seeded random order: the split keeps the files' order, which sorts them by age, and training on that order
    collapses the model to one class."""
    from robustness_bias.data import UTKFaceDataModule

    datamodule = UTKFaceDataModule(root=root, image_size=size, normalization=NORMALIZATION)
    datamodule.setup()
    order = torch.randperm(len(datamodule.train_indices), generator=torch.Generator().manual_seed(0))
    indices = datamodule.train_indices[order[:count].numpy()].tolist()
    images = torch.stack([datamodule.table[i][0] for i in indices])
    return images, torch.as_tensor(datamodule.table.labels[indices])


def synthetic_images(size: int, count: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise with a class-dependent tint: learnable in a few steps, so attacks face a trained model."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, CLASSES, (count,), generator=generator)
    tint = torch.rand(CLASSES, 3, 1, 1, generator=generator)
    noise = torch.rand(count, 3, size, size, generator=generator)
    return (0.6 * noise + 0.4 * tint[labels]).clamp(0, 1), labels


def build(name: str, size: int, device: torch.device, channels_last: bool) -> torch.nn.Module:
    builder = getattr(models, name)
    model = builder(input_shape=(3, size, size), num_classes=CLASSES, normalization=NORMALIZATION).to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def train(model, images, labels, steps: int, batch: int, precision: str, channels_last: bool, compile: bool,
          device: torch.device) -> float:
    """Train for ``steps`` batches (after 3 warm-up steps) and return images/s."""
    step_model = torch.compile(model) if compile else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    model.train()

    def step(i: int) -> None:
        start = (i * batch) % max(1, len(images) - batch)
        x, y = images[start:start + batch].to(device), labels[start:start + batch].to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = F.cross_entropy(step_model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for i in range(3):   # warm-up
        step(i)
    _, seconds = timed(device.type, lambda: [step(i) for i in range(steps)])
    return steps * batch / seconds


def correct(model, images, labels, count: int, device: torch.device, channels_last: bool):
    x, y = correct_inputs(model.eval(), images.to(device), labels.to(device), count)
    return (x.contiguous(memory_format=torch.channels_last) if channels_last else x), y


def images_per_second(estimator, model, x, y, device: torch.device, batch_size: int, precision: str = "fp32"):
    """The estimator's images/s on ``x``, handed whole as one queue (as an audit streams it its samples), working
    on ``batch_size`` at once (the attacks' pool width), under autocast at ``precision`` as an audit's plan runs
    it; and its result. No warm-up here: training has initialised CUDA, and smoothing's floor is measured (and
    compiled) first."""
    def call():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            return estimator(model, x, y, index=torch.arange(len(x)), batch_size=batch_size)

    result, seconds = timed(device.type, call)
    return len(x) / seconds, result


def share_of_floor(estimator, result, rate: float, floor: tuple[float, float, float], classes: int) -> float:
    """The share of its arithmetic floor an estimator reached at ``rate`` images/s: the time its counted
    passes of each kind (forward, forward keeping a graph, backward) would take at ``floor``'s seconds per
    image, over the time it took."""
    passes = estimator.passes(result, classes)
    return rate * sum(float(kind.float().mean()) * seconds for kind, seconds in zip(passes, floor))


def projected_hours(row: dict) -> dict:
    """Hours per stage of one model's column of the grid at the measured rates."""
    rs_per_image = (SMOOTHING_N + SMOOTHING_N0) / (row["rs_n"] + SMOOTHING_N0) / row["rs_img_s"]
    return {"train_h": EPOCHS * TRAIN_IMAGES / row["train_img_s"] / 3600,
            "deepfool_h": ATTACK_AUDITS * TEST_IMAGES / row["deepfool_img_s"] / 3600,
            "cw_h": ATTACK_AUDITS * TEST_IMAGES / row["cw_img_s"] / 3600,
            "rs_h": SMOOTHING_AUDITS * math.ceil(TEST_IMAGES / SMOOTHING_EVERY) * rs_per_image / 3600,
            "cw_h_at_budget": ATTACK_AUDITS * TEST_IMAGES / row["cw_img_s"] * row["cw_budget_queries"]
            / row["cw_queries"] / 3600}


def quick_tier_minutes(row: dict, tier: dict) -> dict:
    """Minutes per stage of one model in one seed of the quick tier at the measured rates, every test face counted
    as attacked (the audits attack the correctly classified ones: this errs high)."""
    faces = {name: math.ceil(QUICK_TEST / every) * tier["audits"][name] for name, every in tier["every"].items()}
    rs_per_image = (tier["rs_n"] + tier["rs_n0"]) / (row["rs_n"] + SMOOTHING_N0) / row["rs_img_s"]
    return {"train_min": tier["epochs"] * QUICK_TRAIN / row["train_img_s"] / 60,
            "deepfool_min": faces["deepfool"] / row["deepfool_img_s"] / 60,
            "cw_min": faces["cw"] / row["cw_img_s"] / 60, "rs_min": faces["rs"] * rs_per_image / 60}


def measure(name: str, args, images, labels, device: torch.device) -> dict:
    torch.manual_seed(0)
    model = build(name, args.image_size, device, args.channels_last)
    train_rate = train(model, images, labels, args.train_steps, args.batch_size, args.precision, args.channels_last,
                       args.compile == "all", device)
    x, y = correct(model, images[-args.pool:], labels[-args.pool:], args.audit_images, device,
                   args.channels_last or bool(args.tier and args.tier["channels_last"]))
    if len(x) < 2:
        raise SystemExit(f"{name}: fewer than 2 correctly classified images after {args.train_steps} training "
                         "steps. Fix: pass more --train-steps")
    rs_count = min(len(x), args.rs_images)
    rs = RandomizedSmoothing(n=args.rs_n, forward_batch=args.rs_forward_batch, compile=args.compile != "none")
    deepfool = DeepFool(steps=50, cuda_graphs=args.cuda_graphs)
    # the paper's grid keeps the paper's budget; the quick tier converges
    cw = CarliniWagner(**({} if args.tier else PAPER_BUDGET), cuda_graphs=args.cuda_graphs)
    if args.cuda_graphs:   # an audit captures in its first chunk and replays in the later ones: captures untimed
        for attack in (deepfool, cw):
            images_per_second(attack, model, x, y, device, args.attack_batch)
    row = {"model": name, "train_img_s": train_rate, "rs_n": args.rs_n, "audited": len(x)}
    # the attacks' floor: each kind of pass at the faster of the pool's width and all the audited images at once
    floor = pass_seconds(model, x, device.type, (min(args.attack_batch, len(x)), len(x)), seconds=0.2)
    with torch.no_grad():
        classes = int(model(x[:1]).shape[1])
    for attack, key in ((deepfool, "deepfool"), (cw, "cw")):
        row[f"{key}_img_s"], result = images_per_second(attack, model, x, y, device, args.attack_batch)
        row[f"{key}_of_floor"] = share_of_floor(attack, result, row[f"{key}_img_s"], floor, classes)
        if key == "cw":
            row["cw_queries"] = float(result.queries.float().mean())
    # a briefly trained model may stop CW early more often than a final one: bound it by its whole budget
    row["cw_budget_queries"] = cw.query_budget
    # smoothing's floor, the forward passes alone at the fastest batch (same precision; compiled here with --compile)
    row["rs_batch"], row["floor_batch"] = smoothing_batches(rs, model, x[:rs_count], args.precision)
    floor = forward_rate(rs.forward_of(model), x, device.type, args.precision, 1.0, row["floor_batch"])
    row["rs_img_s"], _ = images_per_second(rs, model, x[:rs_count], y[:rs_count], device, rs_count, args.precision)
    row["rs_of_floor"] = row["rs_img_s"] * (args.rs_n + SMOOTHING_N0) / floor
    return {**row, **(quick_tier_minutes(row, args.tier) if args.tier else projected_hours(row))}


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=GRID_MODELS, choices=GRID_MODELS + ["small_cnn", "logreg", "resnet18"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--image-size", type=int, default=200, help="UTKFace's 200×200")
    parser.add_argument("--data-dir", help="a UTKFace folder: real faces instead of synthetic images")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="training autocast and smoothing's forward passes")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", choices=["none", "smoothing", "all"], default="none",
                        help="torch.compile smoothing's forward passes, or those and the training step (compiling a "
                             "training step costs minutes per model and saves little of the grid's hours)")
    parser.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=False,
                        help="DeepFool and CW replay their steps from CUDA graphs, timed after a call that captures them")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--train-steps", type=int, default=None,
                        help="default: 200 on a GPU, 2 on a CPU (--quick-tier: an epoch of the tier's faces)")
    parser.add_argument("--audit-images", type=int, default=None,
                        help="default: 256 on a GPU, 4 on a CPU (--quick-tier: 128)")
    parser.add_argument("--attack-batch", type=int, default=256, help="the attacks' pool width (audit.plan's batch_size)")
    parser.add_argument("--rs-images", type=int, default=16, help="images certified (of the audited ones)")
    parser.add_argument("--rs-n", type=int, default=None, help="default: 10,000 on a GPU, 100 on a CPU")
    parser.add_argument("--rs-forward-batch", type=int, default=None,
                        help="noisy images per forward pass (default: the fastest, measured per model as an audit "
                             "does; smoothing's floor is always measured at the fastest)")
    parser.add_argument("--quick-tier", action="store_true",
                        help="project the quick tier's minutes per seed instead (32 px, logistic regression and the UTK "
                             "classifier, CW at its default budget, smoothing at N = 1,000, channels-last audits)")
    args = parser.parse_args(argv)
    args.tier = quick_tier_schedule() if args.quick_tier else None
    if args.tier:
        args.models = args.tier["models"] if args.models == GRID_MODELS else args.models
        args.image_size = 32 if args.image_size == parser.get_default("image_size") else args.image_size
    steady_cpu_allocator()   # CPU attacks' timings independent of what ran before them
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    # the quick tier's projection on a CPU: its attacks on a model trained an epoch, at a pool as wide as the tier's
    # audits fill (on a barely trained model and a few images, CW's and DeepFool's rates are another tier's)
    args.train_steps = args.train_steps or (200 if gpu else math.ceil(QUICK_TRAIN / args.batch_size) if args.tier else 2)
    args.audit_images = args.audit_images or (256 if gpu else 128 if args.tier else 4)
    args.rs_n = args.rs_n or (10_000 if gpu else 100)
    args.pool = max(4 * args.audit_images, 64)
    count = args.train_steps * args.batch_size + args.pool
    images, labels = (utkface_images(args.data_dir, args.image_size, count) if args.data_dir
                      else synthetic_images(args.image_size, count))

    name = torch.cuda.get_device_name(device) if gpu else f"CPU ({torch.get_num_threads()} threads)"
    print(f"# {name}; {args.image_size}×{args.image_size}; {args.precision}"
          f"{', channels-last' if args.channels_last else ''}"
          f"{'' if args.compile == 'none' else ', compiled: ' + args.compile}"
          f"{', attacks from CUDA graphs' if args.cuda_graphs else ''}; "
          f"{'UTKFace' if args.data_dir else 'synthetic'} images")
    rows = []
    for model in args.models:
        rows.append(measure(model, args, images, labels, device))
        print(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rows[-1].items()),
              flush=True)   # each model's figures as soon as they exist, should a later one run out of time
    table = pd.DataFrame(rows)
    rates = ["train_img_s", "deepfool_img_s", "deepfool_of_floor", "cw_img_s", "cw_of_floor", "rs_img_s", "rs_of_floor",
             "rs_batch", "floor_batch", "rs_n", "audited", "cw_queries"]
    print(table[["model", *rates]].round(3).to_string(index=False))
    if args.tier:
        return quick_tier_table(table, args.tier)
    stages = ["train_h", "deepfool_h", "cw_h", "rs_h"]
    table["total_h"] = table[stages].sum(axis=1)
    print(f"\nProjected hours for the UTKFace grid ({EPOCHS} epochs × {TRAIN_IMAGES:,} images; DeepFool + CW on "
          f"{TEST_IMAGES:,} test images × {ATTACK_AUDITS} audits; smoothing N = {SMOOTHING_N:,} on every "
          f"{SMOOTHING_EVERY}th × {SMOOTHING_AUDITS} audits):")
    print(table[["model", *stages, "total_h", "cw_h_at_budget"]].round(2).to_string(index=False))
    total = table["total_h"].sum()
    print(f"grid total: {total:.1f} h on this machine for {len(table)} model(s) "
          f"({'within' if total < 24 else 'over'} 24 h)")
    worst = total + (table["cw_h_at_budget"] - table["cw_h"]).sum()
    print(f"with every CW run spending its whole budget ({table['cw_budget_queries'].iloc[0]} passes per image): "
          f"{worst:.1f} h ({'within' if worst < 24 else 'over'} 24 h)")
    return table


def quick_tier_table(table: pd.DataFrame, tier: dict) -> pd.DataFrame:
    """The quick tier's projected minutes per stage and model, and per seed."""
    stages = ["train_min", "deepfool_min", "cw_min", "rs_min"]
    table["total_min"] = table[stages].sum(axis=1)
    every = tier["every"]
    print(f"\nProjected minutes of the quick tier's training and audits per seed ({tier['epochs']} epochs × "
          f"{QUICK_TRAIN:,} faces; of {QUICK_TEST:,} test faces, DeepFool on every {every['deepfool']}th × "
          f"{tier['audits']['deepfool']} audits, CW on every {every['cw']}th × {tier['audits']['cw']}, smoothing "
          f"N = {tier['rs_n']:,} on every {every['rs']}th × {tier['audits']['rs']}):")
    print(table[["model", *stages, "total_min"]].round(2).to_string(index=False))
    print(f"per seed: {table['total_min'].sum():.1f} min for {len(table)} model(s), before installing, decoding the "
          "faces, each job's start and summaries, and the report (docs/results/utk_quick: measured end to end)")
    return table

if __name__ == "__main__":
    main()
