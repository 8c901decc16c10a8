"""The AFT view (robustness_bias/analysis/aft.py): each group's distance ratio to the rest, adjusted for other
attributes, on simulated audits with a planted answer; the report's aft.md and forest plot; the API's aft()."""

import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from robustness_bias import audit
from robustness_bias.analysis.aft import COLUMNS, aft_ratios
from robustness_bias.report import cli as report


def simulated(n: int, seed: int, *, ratio: float = 1.0, confounded: bool = False, cap: float = np.inf,
              shape: str = "weibull") -> pd.DataFrame:
    """An audit's records by one estimator: group P (40% of points) sits at ``ratio`` times the rest's distance.
    ``confounded``: no direct effect of P, but the stratum "far" doubles the distance and holds 80% of P
    against 20% of the rest. Distances above ``cap`` are reported at it; 10% of points are misclassified."""
    rng = np.random.default_rng(seed)
    member = rng.random(n) < 0.4
    far = rng.random(n) < (np.where(member, 0.8, 0.2) if confounded else 0.5)
    scale = np.where(far, 2.0, 1.0) if confounded else np.where(member, ratio, 1.0)
    noise = rng.weibull(1.5, n) if shape == "weibull" else rng.lognormal(0.0, 0.5, n)
    return pd.DataFrame({"sample_index": np.arange(n), "estimator": "deepfool", "epoch": 3,
                         "distance": np.minimum(scale * noise, cap), "success": True, "correct": rng.random(n) < 0.9,
                         "cap": cap, "group": pd.Categorical(np.where(member, "P", "Q")),
                         "stratum": pd.Categorical(np.where(far, "far", "near")),
                         "site": pd.Categorical(rng.choice(["north", "south", "east"], n))})


def row_of(table: pd.DataFrame, partition: str = "group", group: str = "P") -> pd.Series:
    [row] = table[(table["partition"] == partition) & (table["group"] == group)].itertuples(index=False)
    return pd.Series(row._asdict())


@pytest.mark.parametrize(("shape", "model"), [("weibull", "weibull"), ("lognormal", "lognormal")])
def test_the_planted_ratio_is_recovered(shape, model):
    """Each model on data of its own shape (docs/design.md, "A model view: AFT ratios", gives the coverage
    of the Weibull's interval on log-normal distances: below nominal). At 99.9% a sound fit misses the planted
    ratio in one seed of a thousand, and the interval is still narrow enough to miss a biased one."""
    records = simulated(1000, 0, ratio=0.7, shape=shape)
    table = aft_ratios(records, ["group"], model=model, level=0.999)
    assert list(table.columns) == COLUMNS
    p, q = row_of(table), row_of(table, group="Q")
    assert p.ratio_low < 0.7 < p.ratio_high and p.ratio_high / p.ratio_low < 1.5, p.to_dict()
    assert p.p_value < 1e-4 and p.reason == "" and p.adjusted_for == ""
    assert q.ratio == pytest.approx(1 / p.ratio, rel=1e-3)   # Q against the rest is the reverse comparison
    assert p.n + q.n == records["correct"].sum() and p.events == p.n and p.censored == 0


def test_adjusting_for_the_confounder_removes_the_spurious_ratio():
    records = simulated(600, 1, confounded=True)
    plain = row_of(aft_ratios(records, ["group"]))
    adjusted = row_of(aft_ratios(records, ["group"], ["stratum"]))
    assert plain.ratio_low > 1.1, plain.to_dict()                       # P looks farther from the boundary …
    assert adjusted.ratio_low < 1 < adjusted.ratio_high, adjusted.to_dict()   # … only because it is more often far
    assert adjusted.adjusted_for == "stratum"
    within = row_of(aft_ratios(records, ["stratum"]), "stratum", "far")   # the stratum's own ratio: 2
    assert within.ratio_low < 2 < within.ratio_high


def test_capped_distances_are_censored_not_taken_at_face_value():
    """A third of P's points and more of the rest's sit at the cap: censored at it, the fit recovers 0.7; read
    as measured, the ratio shrinks towards 1 (both groups pile up at the cap) and its interval misses 0.7."""
    records = simulated(800, 2, ratio=0.7, cap=0.6)
    censored = row_of(aft_ratios(records, ["group"]))
    naive = row_of(aft_ratios(records.assign(cap=np.inf), ["group"]))   # no cap known: every distance an event
    counting = records[records["correct"] & (records["group"] == "P")]
    assert censored.censored == (counting["distance"] >= 0.6).sum() > 0.3 * censored.n
    assert naive.censored == 0
    assert censored.ratio_low < 0.7 < censored.ratio_high, censored.to_dict()
    assert naive.ratio_low > 0.8, naive.to_dict()
    assert abs(np.log(censored.ratio / 0.7)) < abs(np.log(naive.ratio / 0.7)), (censored.ratio, naive.ratio)


def test_failures_beyond_the_attacks_reach_are_censored_at_tau_max_and_zeros_floored():
    """An attack that gives up on every point farther than 1: its largest distance, τ_max, is just below 1,
    so a failure censored there is known to lie beyond, as σ's censor policy takes it."""
    records = simulated(800, 3, ratio=0.7)
    beyond = records["distance"] > 1.0
    records.loc[beyond, ["success", "distance"]] = [False, np.inf]
    records.loc[records.index[~beyond][:5], "distance"] = 0.0   # on the boundary: log 0 is no AFT's
    p = row_of(aft_ratios(records, ["group"]))
    counting = records[records["correct"] & (records["group"] == "P")]
    assert p.censored == (~counting["success"]).sum() > 0.1 * p.n and p.events == counting["success"].sum()
    assert p.reason == "" and p.ratio_low < 0.7 < p.ratio_high, p.to_dict()
    dropped = row_of(aft_ratios(records[records["success"]], ["group"]))   # failures left out: biased towards 1
    assert dropped.ratio_low > 0.7, dropped.to_dict()


def test_narrow_well_separated_distances_are_fitted():
    """Exact distances of synthetic data: Weibull of shape 12, the group at 2.4× the rest, where the Weibull
    fitter's own minimizer (SLSQP) runs off to an infinite likelihood; its fallback fits them."""
    rng = np.random.default_rng(0)
    member = rng.random(400) < 0.52
    records = pd.DataFrame({"estimator": "exact", "distance": np.where(member, 1.9, 0.78) * rng.weibull(12, 400),
                            "success": True, "correct": True, "group": pd.Categorical(np.where(member, "P", "Q"))})
    p = row_of(aft_ratios(records, ["group"], level=0.999))
    assert p.reason == "" and p.ratio_low < 1.9 / 0.78 < p.ratio_high, p.to_dict()


@pytest.mark.parametrize(("change", "adjust_for", "reason"), [
    ("small", [], "3 correctly classified points in the group, fewer than min_group_size=5"),
    ("all_failed", [], "no measured distance in the group (all"),
    ("none", ["group×site"], "the adjusting attributes determine the group"),   # P: the union of P×north, …
    ("nothing_measured", [], "no measured distance in the group")])
def test_a_ratio_that_cannot_be_estimated_is_nan_with_its_reason(change, adjust_for, reason):
    records = simulated(200, 4, ratio=0.7)
    records["group×site"] = pd.Categorical(records["group"].astype(str) + "×" + records["site"].astype(str))
    member = records["group"] == "P"
    if change == "small":
        records.loc[member, "correct"] = False
        records.loc[records.index[member][:3], "correct"] = True
    if change == "all_failed":
        records.loc[member, ["success", "distance"]] = [False, np.inf]
    if change == "nothing_measured":   # every attack failed: no τ_max either
        records[["success", "distance"]] = [False, np.inf]
    others = ["site"] if change in ("small", "all_failed") else []   # … still fitted
    table = aft_ratios(records, ["group", *others], adjust_for)
    p = row_of(table)
    assert p.reason.startswith(reason) and np.isnan([p.ratio, p.ratio_low, p.ratio_high, p.p_value]).all(), p.to_dict()
    assert (table.loc[table["partition"].isin(others), "reason"] == "").all()


def test_a_partition_is_never_adjusted_for_itself():
    """As σ adjusted for other attributes: group is adjusted for stratum alone, group×site for stratum."""
    records = simulated(300, 9, ratio=0.7)
    records["group×site"] = pd.Categorical(records["group"].astype(str) + "×" + records["site"].astype(str))
    table = aft_ratios(records, ["group", "group×site"], ["group", "site", "stratum"])
    assert set(table.loc[table["partition"] == "group", "adjusted_for"]) == {"site, stratum"}
    assert set(table.loc[table["partition"] == "group×site", "adjusted_for"]) == {"stratum"}
    alone = row_of(aft_ratios(records, ["group"], ["site", "stratum"]))
    assert row_of(table).ratio == alone.ratio and alone.reason == ""


def test_redundant_adjusting_columns_are_dropped():
    """Adjusting for site and stratum×site spans what stratum×site spans alone: the same fit."""
    records = simulated(500, 5, ratio=0.8)
    records["stratum×site"] = pd.Categorical(records["stratum"].astype(str) + "×" + records["site"].astype(str))
    both = row_of(aft_ratios(records, ["group"], ["site", "stratum×site"]))
    alone = row_of(aft_ratios(records, ["group"], ["stratum×site"]))
    assert both.reason == "" and both.ratio == pytest.approx(alone.ratio, rel=1e-3)
    assert both.ratio_high / both.ratio_low == pytest.approx(alone.ratio_high / alone.ratio_low, rel=1e-2)


def test_unknown_attributes_and_models_are_named():
    with pytest.raises(ValueError, match=r"no column \['age'\]"):
        aft_ratios(simulated(50, 6), ["group"], ["age"])
    with pytest.raises(ValueError, match="model='cox'"):
        aft_ratios(simulated(50, 6), ["group"], model="cox")


def write_job(folder, records: pd.DataFrame, settings: dict | None = None) -> None:
    """A finished job as the report reads it: result.json, a final summary naming the partitions, the records."""
    final = folder / "audits" / "final"
    final.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps({"dataset": "faces", "model": "cnn", "seed": 0, "test_accuracy": 0.9,
                                                    "regularizer": None, **({"summary_settings": settings} if settings
                                                                            is not None else {})}))
    summary = [{"estimator": "deepfool", "partition": p, "group": str(g), "sigma": 0.0, "epoch_tag": "final"}
               for p in ("group", "site") for g in records[p].cat.categories]
    pd.DataFrame(summary).to_parquet(final / "summary.parquet")
    records.to_parquet(final / "records.parquet")


def test_the_report_writes_the_aft_table_and_forest_plot(tmp_path, caplog):
    write_job(tmp_path / "sweep" / "job", simulated(300, 7, confounded=True), {"adjust_for": ["stratum"]})
    out = tmp_path / "out"
    tables = report.main([str(tmp_path / "sweep"), "--out", str(out), "--only", "aft", "figures"])
    table = tables["aft"]
    assert set(table["adjusted for"]) == {"stratum"}   # the job's audit.adjust_for
    assert len(table) == 2 + 3 and set(table["partition"]) == {"group", "site"}
    assert table["ratio"].notna().all() and (table["model"] == "cnn").all() and (table["job"] == "job").all()
    assert (out / "aft.md").read_text().startswith("| dataset | model | seed | estimator | partition | group |")
    pd.testing.assert_frame_equal(pd.read_csv(out / "aft.csv", keep_default_na=False, na_values=[""]).fillna(
        {"reason": ""}), table.astype({"adjusted for": object, "reason": object}), check_dtype=False)
    for partition in ("group", "site"):
        for suffix in ("png", "pdf"):
            assert (out / "figures" / f"aft_faces_{partition}.{suffix}").stat().st_size > 0

    other = report.main([str(tmp_path / "sweep"), "--out", str(out), "--only", "aft", "--adjust-for", "site"])["aft"]
    group = other[other["partition"] == "group"].rename(columns={"ratio low": "ratio_low"})
    assert set(group["adjusted for"]) == {"site"} and len(other) == 5   # --adjust-for, not the job's setting
    assert row_of(group).ratio_low > 1   # the confounder not adjusted for

    with caplog.at_level(logging.WARNING):
        skipped = report.main([str(tmp_path / "sweep"), "--out", str(tmp_path / "none"), "--only", "aft",
                               "--adjust-for", "age"])
    assert "aft" not in skipped and not (tmp_path / "none" / "aft.md").exists()
    [warning] = [r.getMessage() for r in caplog.records if "AFT" in r.getMessage()]
    assert "no attribute age to adjust for" in warning


def test_forest_rows_of_one_model_and_seed_in_two_experiments_are_told_apart():
    from robustness_bias.report.figures import _forest_labels

    rows = pd.DataFrame({"group": ["P", "P", "Q"], "model": "cnn", "seed": [0, 0, np.nan], "job": ["a", "b", "a"]})
    assert _forest_labels(rows) == ["P · cnn (seed 0) · a", "P · cnn (seed 0) · b", "Q · cnn"]


def test_a_job_without_the_setting_is_not_adjusted(tmp_path):
    write_job(tmp_path / "sweep" / "job", simulated(200, 8, ratio=0.7))
    table = report.main([str(tmp_path / "sweep"), "--out", str(tmp_path / "out"), "--only", "aft"])["aft"]
    assert set(table["adjusted for"]) == {""} and table["ratio"].notna().all()


def test_the_api_returns_the_aft_table():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    images = torch.rand(90, 1, 4, 4)
    with torch.no_grad():
        model[1].bias -= model(images).mean(0)                 # every class predicted for some images
        labels = model(images).argmax(1).numpy()
    labels[:6] = (labels[:6] + 1) % 3                          # a few misclassified: left out of the fits
    site = np.array(["north", "south"])[np.arange(90) % 2]
    result = audit(model, images, labels, sensitive_features={"site": site}, estimators="exact", progress=False)
    table = result.aft()
    assert list(table.columns) == COLUMNS and set(table["adjusted_for"]) == {""}
    assert table[["partition", "group"]].apply(tuple, axis=1).tolist() == \
        [("class", "0"), ("class", "1"), ("class", "2"), ("site", "north"), ("site", "south")]
    correct = result.records[result.records["correct"]]
    assert table.set_index("group").loc[["north", "south"], "n"].tolist() == \
        [(correct["site"] == "north").sum(), (correct["site"] == "south").sum()]
    assert table["ratio"].notna().all(), table

    adjusted = result.aft(["class"], partitions=["site"])
    assert set(adjusted["adjusted_for"]) == {"class"} and adjusted["ratio"].notna().all()

    given = audit(model, images, labels, sensitive_features={"site": site}, estimators="exact", progress=False,
                  adjust_for=["class"])
    table = given.aft()   # adjusted for what the audit was given, but class for itself
    assert table.groupby("partition")["adjusted_for"].unique().map(list).to_dict() == {"class": [""], "site": ["class"]}
    pd.testing.assert_frame_equal(table[table["partition"] == "site"].reset_index(drop=True), adjusted)
