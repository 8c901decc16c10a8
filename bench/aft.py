"""Simulate how often the AFT ratio's interval covers a planted ratio (robustness_bias/analysis/aft.py).

    python bench/aft.py                 # 200 audits a scenario, about 0.2 s a fit
    python bench/aft.py --audits 1000
    python bench/aft.py --aic outputs/<date>/<time>/audits/final/records.parquet ...   # which shape fits real ones
    python bench/aft.py --sigma outputs/<date>/<time>/audits/final/records.parquet ...   # the ratios beside 1 + σ

Each audit: 600 points, 90% correctly classified, group P 40% of them at ``ratio`` times the rest's distance
(Weibull of shape 1.5, or log-normal of σ 0.5, on the log scale a shift). "capped" caps every distance at 0.6
(smoothing's cap; about 45% of P's points and 60% of the rest's censored); "confounded" has no direct effect of
P (true ratio 1), but a stratum that doubles the distance holds 80% of P against 20% of the rest; the fit adjusts
for it or not. Prints
the share of 95% intervals covering the planted ratio, the mean log ratio against the planted one, and the
seconds a fit took. With --aic: per estimator of saved records, the AIC of a Weibull and of a log-normal fitted
to the distances as the AFT sees them (failures and capped distances censored), lower is better. With --sigma:
per group of every single attribute, 1 + σ (restricted means, τ_max pooled) beside each shape's unadjusted ratio.
docs/design.md "A model view: AFT ratios" records the tables.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from robustness_bias.analysis.aft import MODELS, aft_ratios, dummies, durations, fit_ratio, independent
from robustness_bias.analysis.summary import group_summary

SCENARIOS = {   # name: (distance shape, AFT model, cap, confounded, adjusted for the stratum)
    "weibull data, weibull fit": ("weibull", "weibull", np.inf, False, False),
    "log-normal data, weibull fit": ("lognormal", "weibull", np.inf, False, False),
    "log-normal data, log-normal fit": ("lognormal", "lognormal", np.inf, False, False),
    "weibull data, log-normal fit": ("weibull", "lognormal", np.inf, False, False),
    "weibull data capped, weibull fit": ("weibull", "weibull", 0.6, False, False),
    "weibull data capped, log-normal fit": ("weibull", "lognormal", 0.6, False, False),
    "confounded, unadjusted, weibull fit": ("weibull", "weibull", np.inf, True, False),
    "confounded, adjusted, weibull fit": ("weibull", "weibull", np.inf, True, True),
}


def audit(rng: np.random.Generator, shape: str, cap: float, confounded: bool, ratio: float = 0.7,
          n: int = 600) -> pd.DataFrame:
    member = rng.random(n) < 0.4
    far = rng.random(n) < (np.where(member, 0.8, 0.2) if confounded else 0.5)
    scale = np.where(far, 2.0, 1.0) if confounded else np.where(member, ratio, 1.0)
    noise = rng.weibull(1.5, n) if shape == "weibull" else rng.lognormal(0.0, 0.5, n)
    return pd.DataFrame({"estimator": "sim", "distance": np.minimum(scale * noise, cap), "success": True,
                         "correct": rng.random(n) < 0.9, "cap": cap, "group": np.where(member, "P", "Q"),
                         "stratum": np.where(far, "far", "near")})


def coverage(audits: int, shape: str, model: str, cap: float, confounded: bool, adjusted: bool, seed: int = 0) -> dict:
    rng, truth = np.random.default_rng(seed), 1.0 if confounded else 0.7
    hits, logs, seconds = 0, [], 0.0
    for _ in range(audits):
        records = audit(rng, shape, cap, confounded)
        counting = records[records["correct"]]
        start = time.perf_counter()   # aft_ratios' steps for group P alone (Q, its mirror image, is not fitted)
        duration, event = durations(records)
        adjusting = independent(dummies(counting, ["stratum"] if adjusted else []))
        row = fit_ratio(duration, event, (counting["group"] == "P").to_numpy(), adjusting, level=0.95,
                        min_group_size=5, model=model)
        seconds += time.perf_counter() - start
        hits += row["ratio_low"] < truth < row["ratio_high"]
        logs.append(np.log(row["ratio"] / truth))
    return {"coverage": hits / audits, "mean log(ratio / planted)": float(np.mean(logs)),
            "sd log ratio": float(np.std(logs)), "s / fit": seconds / audits}


def information(path: str) -> None:
    """The Weibull's and the log-normal's AIC on each estimator's distances of one records file."""
    import warnings

    from lifelines import LogNormalFitter, WeibullFitter

    records = pd.read_parquet(path)
    for estimator, frame in records.groupby("estimator", observed=True):
        duration, event = durations(frame)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            weibull, lognormal = WeibullFitter().fit(duration, event), LogNormalFitter().fit(duration, event)
        print(f"{path}  {estimator}: {len(duration)} points, {event.sum()} measured; AIC Weibull {weibull.AIC_:.1f} "
              f"(shape {weibull.rho_:.2f}), log-normal {lognormal.AIC_:.1f}")


def beside_sigma(paths: list[str]) -> None:
    """Per estimator × single-attribute partition × group of the records files: 1 + σ (the ratio of restricted
    means) beside the unadjusted AFT ratio of either shape, and the share of the estimator's points censored;
    then how far each shape lies from 1 + σ, over all groups and over those of estimators that censored none
    (where σ sees every distance; beyond a cap σ sees nothing and the AFT extrapolates)."""
    frames = []
    for path in paths:
        records = pd.read_parquet(path)
        partitions = [c for c in records.columns if isinstance(records[c].dtype, pd.CategoricalDtype)
                      and c not in ("estimator", "failure") and "×" not in c]
        key = ["estimator", "partition", "group"]
        summary = group_summary(records, partitions, significance={"resamples": 0, "permutations": 1})
        table = (1 + summary[summary["group"] != "(all)"].set_index(key)["sigma"]).rename("1 + σ").to_frame()
        for model in MODELS:
            table[model] = aft_ratios(records, partitions, model=model).set_index(key)["ratio"]
        censored = {str(e): float(1 - durations(f)[1].mean()) for e, f in records.groupby("estimator", observed=True)}
        table["censored"] = [censored[str(e)] for e in table.index.get_level_values("estimator")]
        frames.append(table.dropna().reset_index().assign(job=Path(path).parents[2].name))
    table = pd.concat(frames, ignore_index=True).set_index(["job", "estimator", "partition", "group"])
    print(table.round(3).to_string())
    for name, rows in (("all", table), ("nothing censored", table[table["censored"] == 0])):
        far = {model: np.log(rows[model] / rows["1 + σ"]).abs() for model in MODELS}
        print(f"{name}: {len(rows)} groups, mean |log(ratio / (1 + σ))| "
              + ", ".join(f"{m} {far[m].mean():.3f}" for m in MODELS)
              + f"; the {MODELS[0]} nearer in {(far[MODELS[0]] < far[MODELS[1]]).sum()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audits", type=int, default=200, help="simulated audits per scenario")
    parser.add_argument("--aic", nargs="+", metavar="RECORDS", help="records.parquet files to compare the shapes on")
    parser.add_argument("--sigma", nargs="+", metavar="RECORDS", help="records.parquet files: the ratios beside 1 + σ")
    args = parser.parse_args()
    for path in args.aic or []:
        information(path)
    if args.sigma:
        beside_sigma(args.sigma)
    for name, scenario in ([] if args.aic or args.sigma else SCENARIOS.items()):
        result = coverage(args.audits, *scenario)
        print(f"{name:36s} " + "  ".join(f"{key} {value:.3f}" for key, value in result.items()), flush=True)
