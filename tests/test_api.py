"""robustness_bias.audit: the Python API gives the command line's records, summaries and figures, for any
model, any images and fairlearn-style sensitive features."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from hydra.utils import instantiate
from torch import nn

import robustness_bias
import robustness_bias.api.entry
from conftest import compose_config
from robustness_bias import AuditResult, audit
from robustness_bias.analysis import metrics
from robustness_bias.api.entry import ESTIMATORS, NAMED, plan_of
from robustness_bias.config.job import EstimatorPlan
from robustness_bias.estimators import CarliniWagner, DeepFool, EstimatorMismatch, RandomizedSmoothing
from robustness_bias.models import Normalize
from robustness_bias.assembly import build_model
from robustness_bias.pipeline import run
from robustness_bias.records import audit_folder, read_records, read_summary

ROOT = Path(__file__).resolve().parent.parent
SHORTER = ["estimator.cw.binary_search_steps=2", "estimator.cw.steps=25", "estimator.rs.n=2000"]


@pytest.fixture(scope="module")
def digits():
    """The default run's data module (digits, its seeded split and normalization), set up."""
    datamodule = instantiate(compose_config(["logger=none"]).dataset)
    datamodule.setup()
    return datamodule


def fit(model: nn.Module, digits, steps: int = 150) -> nn.Module:
    """A few full-batch Adam steps on the training split, so that most test digits are classified right."""
    torch.manual_seed(0)
    x = digits.table.images[digits.train_indices]
    y = torch.as_tensor(digits.table.labels[digits.train_indices])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval()


def test_defaults_are_the_command_lines():
    """An estimator named in the API runs at the settings and plan the command line gives it."""
    cfg = compose_config(["logger=none", f"estimator=[{','.join(NAMED)}]"])
    for name, estimator_class in NAMED.items():
        configured = instantiate(cfg.estimator[name])
        assert type(configured) is estimator_class
        public = {key: value for key, value in vars(configured).items() if not key.startswith("_") and key != "step_cache"}
        assert {key: getattr(estimator_class(), key) for key in public} == public, name
        (_, plan), = plan_of([name], None, None, nn.Identity()).values() if name != "exact" else \
            plan_of([name], None, None, nn.Linear(2, 2)).values()
        assert plan == OmegaConf.to_object(cfg.audit.plan[name]), name
    assert list(ESTIMATORS) == [name for name in compose_config(["logger=none"]).estimator]   # the same four, in order
    defaults = audit.__kwdefaults__
    for key in ("conditional", "failures", "tau_max", "min_group_size"):
        assert defaults[key] == cfg.audit[key], key
    assert list(defaults["rb_quantiles"]) == list(cfg.audit.rb_quantiles)


@pytest.mark.slow
def test_the_api_gives_the_command_lines_records_summary_and_figures(digits, tmp_path):
    """The default model and data at the default settings but shorter budgets for CW and smoothing (given
    to the API as configured objects; smoothing keeps its plan, every 5th image): mode=audit on saved
    weights, and audit() on the same weights, give the same records (but for the fingerprint of the
    job's settings, which for the command line covers its whole Hydra config), the same summary and the
    same figures."""
    cfg = compose_config(["logger=none"])
    model, _ = build_model(cfg, digits)
    fit(model, digits)
    weights = tmp_path / "weights.pt"
    torch.save(model.state_dict(), weights)
    cli = tmp_path / "cli"
    run(compose_config(["logger=none", "mode=audit", f"model.checkpoint={weights}", "audit.progress=false",
                        *SHORTER], cli))

    test = digits.test_indices
    result = audit(model, digits.table.images[test], digits.table.labels[test], sample_index=test, progress=False,
                   estimators=["exact", "deepfool", CarliniWagner(binary_search_steps=2, steps=25),
                               RandomizedSmoothing(n=2_000)])
    expected = read_records(audit_folder(cli, "final"))
    assert expected["correct"].mean() > 0.9 and set(expected["estimator"]) == {"exact", "deepfool", "cw", "rs"}
    pd.testing.assert_frame_equal(result.records.drop(columns="settings_hash"), expected.drop(columns="settings_hash"))
    assert result.records["settings_hash"].nunique() == 1
    pd.testing.assert_frame_equal(result.summary, read_summary(audit_folder(cli, "final")))

    saved = result.save(tmp_path / "api")
    for name in ("final_survival_class.png", "final_sigma.png"):
        assert (saved / "figures" / name).read_bytes() == (cli / "figures" / name).read_bytes(), name
    pd.testing.assert_frame_equal(read_records(audit_folder(saved, "final")), result.records)
    cli_result, api_result = (json.loads((folder / "result.json").read_text()) for folder in (cli, saved))
    for key in ("test_accuracy", "partition", "summary_settings", "sigma"):
        assert api_result[key] == cli_result[key], key


def ink_and_site(images: torch.Tensor) -> pd.DataFrame:
    """Two made-up sensitive features: more or less ink than the median, and one of three sites."""
    ink = images.flatten(1).sum(1).numpy()
    return pd.DataFrame({"ink": np.where(ink > np.median(ink), "heavy", "light"),
                         "site": pd.Categorical(np.array(["north", "east", "south"])[np.arange(len(ink)) % 3],
                                                categories=["south", "north", "east"])})


def test_any_sequential_with_two_sensitive_features_and_their_intersection(digits):
    """A model the project does not define, given in training mode with dropout and without its input
    normalization, on images and a DataFrame of two sensitive features."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 10))
    normalization = {"mean": [0.3], "std": [0.4]}
    fit(nn.Sequential(Normalize(**normalization), model), digits).train()   # left in training mode, as notebooks do
    test = digits.test_indices[:200]
    images, labels = digits.table.images[test], digits.table.labels[test]
    features = ink_and_site(images)

    result = audit(model, images, labels, sensitive_features=features, normalization=normalization,
                   estimators=["deepfool", RandomizedSmoothing(n=500, n0=50)], progress=False)
    assert model.training and model[3].training, "each module's mode is restored"
    assert all(p.requires_grad for p in model.parameters())
    records = result.records
    with torch.no_grad():   # predicted in eval mode (no dropout), behind the normalization
        expected = model.eval()((images - 0.3) / 0.4).argmax(1).numpy()
    deepfool = records[records["estimator"] == "deepfool"].set_index("sample_index")
    assert deepfool.index.tolist() == list(range(200)) and (deepfool["prediction"] == expected).all()
    assert (deepfool["correct"] == (expected == labels)).all() and deepfool["correct"].mean() > 0.8
    assert len(records[records["estimator"] == "rs"]) == 40   # smoothing's plan: every 5th image
    assert (deepfool["ink"].astype(str) == features["ink"]).all()
    assert (deepfool["site"].astype(str) == features["site"].astype(str)).all()
    assert (deepfool["ink×site"].astype(str) == features["ink"] + "×" + features["site"].astype(str)).all()
    solved = deepfool[deepfool["correct"]]
    assert solved["success"].all() and (solved["distance"] > 0).all() and np.isfinite(solved["distance"]).all()

    summary = result.summary
    assert list(pd.unique(summary["partition"])) == ["class", "ink", "site", "ink×site"]
    assert list(summary.loc[summary["partition"] == "site", "group"].unique()[1:]) == ["south", "north", "east"]
    table = result.by_group
    assert result.partition == "ink×site" and table.index.names == ["ink", "site"] and len(table) == 6
    counts = features.astype(str).value_counts()
    assert table["size", "deepfool"].to_dict() == {key: counts[key] for key in table.index}
    # σ of each intersection group against the rest, recomputed from the records by the paper's definition
    distance, correct = deepfool["distance"].to_numpy(), deepfool["correct"].to_numpy()
    tau_max = metrics.resolve_tau_max("pooled_max", distance, correct)
    for (ink, site), sigma in table["sigma", "deepfool"].items():
        member = ((deepfool["ink"] == ink) & (deepfool["site"] == site)).to_numpy()
        assert sigma == pytest.approx(metrics.sigma(distance, correct, member, tau_max))
    assert result.difference()["sigma", "deepfool"] == pytest.approx(table["sigma", "deepfool"].max()
                                                                      - table["sigma", "deepfool"].min())
    assert result.overall["accuracy", "deepfool"] == pytest.approx(deepfool["correct"].mean())
    assert result.overall["size", "rs"] == 40 and isinstance(result.overall["size", "rs"], (int, np.integer))
    # fairlearn's names: the extremes over groups, and the ratio of the smallest to the largest
    assert result.group_min()["sigma", "deepfool"] == table["sigma", "deepfool"].min()
    assert result.group_max()["median_distance", "deepfool"] == table["median_distance", "deepfool"].max()
    assert result.ratio()["median_distance", "deepfool"] == pytest.approx(
        table["median_distance", "deepfool"].min() / table["median_distance", "deepfool"].max())
    worst = (table["accuracy", "deepfool"] / result.overall["accuracy", "deepfool"]).agg(lambda r: min(r.min(), (1 / r).min()))
    assert result.ratio("to_overall")["accuracy", "deepfool"] == pytest.approx(worst)
    assert "sigma" not in result.ratio().index.get_level_values("metric")   # signed: difference() is its measure
    assert result.by_partition("site").index.tolist() == ["south", "north", "east"]


@pytest.fixture(scope="module")
def linear(digits):
    """The default model (logistic regression behind the digits' normalization), fitted."""
    model, _ = build_model(compose_config(["logger=none"]), digits)
    return fit(model, digits)


@pytest.fixture(scope="module")
def test_digits(digits):
    test = digits.test_indices[:120]
    return digits.table.images[test], digits.table.labels[test]


def test_sensitive_features_as_fairlearn_takes_them(linear, test_digits):
    """A DataFrame, a dict of arrays, one array or one named Series give the same groups."""
    images, labels = test_digits
    ink = ink_and_site(images)["ink"]
    frames = {kind: audit(linear, images, labels, sensitive_features=features, estimators="exact", progress=False)
              for kind, features in {"frame": ink.to_frame(), "dict": {"ink": ink.to_numpy()}, "series": ink,
                                     "array": ink.to_numpy()}.items()}
    assert frames["array"].partition == "sensitive_feature_0"
    for kind in ("frame", "dict", "series"):
        assert frames[kind].partition == "ink"
        pd.testing.assert_frame_equal(frames[kind].by_group, frames["array"].by_group.rename_axis("ink"))
    plain = audit(linear, images, labels, estimators="exact", progress=False)
    assert plain.partition == "class" and list(plain.by_group.index) == [str(k) for k in range(10)]


def test_sigma_adjusted_for_a_sensitive_feature(linear, test_digits):
    """Ink adjusted for the class: the rest is reweighted to each ink group's own mix of digits, so the adjusted σ
    is the standardized one computed here from the records by hand (no strata are left out at 120 digits)."""
    images, labels = test_digits
    result = audit(linear, images, labels, sensitive_features=ink_and_site(images)[["ink"]], estimators="exact",
                   adjust_for=["class"], progress=False, significance={"resamples": 100, "permutations": 100})
    table = result.by_group
    records = result.records[result.records["correct"]]
    clipped = np.minimum(records["distance"], result.summary["tau_max"].iloc[0])
    for ink in ("heavy", "light"):
        mine = records["ink"] == ink
        weights = records[mine]["class"].value_counts(normalize=True)
        rest_means = clipped[~mine].groupby(records[~mine]["class"], observed=True).mean()
        by_hand = clipped[mine].mean() / (weights * rest_means.reindex(weights.index)).sum() - 1
        assert table.loc[ink, ("adjusted_sigma", "exact")] == pytest.approx(by_hand)
        assert table.loc[ink, ("incomparable", "exact")] == ""
        low, high = table.loc[ink, ("adjusted_sigma_low", "exact")], table.loc[ink, ("adjusted_sigma_high", "exact")]
        assert low < by_hand < high
    assert "adjusted_sigma" not in audit(linear, images, labels, sensitive_features=ink_and_site(images)[["ink"]],
                                         estimators="exact", progress=False).by_group


def test_normalization_given_apart_measures_as_inside_the_model(linear, test_digits):
    images, labels = test_digits
    inside = audit(linear, images, labels, estimators=["exact", "deepfool"], progress=False).records
    bare = nn.Sequential(*list(linear)[1:])   # without its Normalize layer
    normalize = linear[0]
    apart = audit(bare, images, labels, estimators=["exact", "deepfool"], progress=False,
                  normalization={"mean": normalize.mean.flatten().tolist(), "std": normalize.std.flatten().tolist()}).records
    pd.testing.assert_series_equal(inside["distance"], apart["distance"])
    assert (inside["correct"] == apart["correct"]).all()


def test_a_dataset_or_loader_gives_the_tensors_records(linear, test_digits):
    images, labels = test_digits
    from_tensor = audit(linear, images, labels, estimators="deepfool", progress=False).records
    pairs = torch.utils.data.TensorDataset(images, torch.as_tensor(labels))
    for data in (pairs, torch.utils.data.DataLoader(pairs, batch_size=7)):
        pd.testing.assert_frame_equal(audit(linear, data, estimators="deepfool", progress=False).records, from_tensor)


def test_default_estimators_are_the_four_that_fit_the_model(linear, test_digits, monkeypatch):
    images, labels = test_digits
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    cheap = {"cw": CarliniWagner(binary_search_steps=1, steps=5), "rs": RandomizedSmoothing(n=100, n0=10)}
    with pytest.raises(EstimatorMismatch, match="affine"):
        audit(mlp, images, labels, estimators=["exact"], progress=False)
    assert set(audit(mlp, images[:20], labels[:20], estimators={"deepfool": DeepFool(), **cheap},
                     progress=False).records["estimator"]) == {"deepfool", "cw", "rs"}
    # unnamed, the default four (here on cheap budgets): exact only where it fits
    monkeypatch.setattr(robustness_bias.api.entry, "ESTIMATORS",
                        {name: (lambda name=name: cheap.get(name) or ESTIMATORS[name]()) for name in ESTIMATORS})
    assert list(pd.unique(audit(mlp, images[:20], labels[:20], progress=False).records["estimator"])) == \
        ["deepfool", "cw", "rs"]
    assert list(pd.unique(audit(linear, images[:20], labels[:20], progress=False).records["estimator"])) == \
        ["exact", "deepfool", "cw", "rs"]


@pytest.mark.parametrize(("change", "message"), [
    ({"X": "normalized"}, r"outside \[0,1\].*normalization="),
    ({"y": "short"}, "one label per image"),
    ({"sensitive_features": {"label": np.zeros(120)}}, "already have a column"),
    ({"sensitive_features": {"ink": np.zeros(7)}}, "has 7 values for 120 images"),
    ({"sensitive_features": {"ink": np.r_[np.nan, np.zeros(119)]}}, "missing value at position 0"),
    ({"estimators": ["fgsm"]}, "unknown estimator 'fgsm'"),
    ({"every_nth": 0}, "every_nth=0: must be a whole number"),
    ({"failures": "ignore"}, "failures=ignore: must be one of censor, drop"),
    ({"class_names": ["a", "b"]}, "2 names but the model gives 10 outputs"),
    ({"sample_index": np.zeros(120, dtype=int)}, "distinct integers"),
    ({"adjust_for": ["age"]}, r"adjust_for=\['age'\]: no sensitive feature \['age'\]")])
def test_bad_input_is_named(linear, test_digits, change, message):
    images, labels = test_digits
    arguments = {"X": images, "y": labels, "estimators": "exact", "progress": False}
    arguments.update(change)
    if change.get("X") == "normalized":
        arguments["X"] = (images - 0.3) / 0.4
    if change.get("y") == "short":
        arguments["y"] = labels[:-1]
    with pytest.raises(ValueError, match=message):
        audit(linear, **arguments)


class CrashingDeepFool(DeepFool):
    """DeepFool that dies (as a killed kernel would) once all its instances have handed back ``chunks`` chunks."""

    chunks: int | None = None

    def stream(self, *args, **kwargs):
        for done in super().stream(*args, **kwargs):
            if CrashingDeepFool.chunks == 0:
                raise KeyboardInterrupt("simulated crash")
            if CrashingDeepFool.chunks is not None:
                CrashingDeepFool.chunks -= 1
            yield done


def test_a_folder_makes_the_audit_resumable_by_chunk(linear, test_digits, tmp_path):
    images, labels = test_digits

    def run_in(folder):
        return audit(linear, images, labels, estimators={"deepfool": CrashingDeepFool()},
                     plans={"deepfool": EstimatorPlan(batch_size=8, chunk_size=16)}, folder=folder, progress=False)

    CrashingDeepFool.chunks = None
    whole = run_in(tmp_path / "whole")
    CrashingDeepFool.chunks = 2   # two chunks handed back (and stored), then the crash
    with pytest.raises(KeyboardInterrupt):
        run_in(tmp_path / "killed")
    CrashingDeepFool.chunks = None
    resumed = run_in(tmp_path / "killed")
    # counted over both attempts, as result.json's audit_chunks: no chunk computed twice
    assert resumed.chunks[1]["deepfool"] == {"reused": 2, "computed": whole.chunks[1]["deepfool"]["computed"]}
    pd.testing.assert_frame_equal(resumed.records, whole.records)
    assert not list((tmp_path / "killed").glob("audits/.partial/*/deepfool*/chunk-*")), "chunks go once recorded"

    CrashingDeepFool.chunks = 0   # finished: read back, nothing measured
    pd.testing.assert_frame_equal(run_in(tmp_path / "killed").records, whole.records)
    with torch.no_grad():
        linear[-1].bias[0] += 1e-3   # other weights: measured anew
    try:
        with pytest.raises(KeyboardInterrupt):
            run_in(tmp_path / "killed")
    finally:
        with torch.no_grad():
            linear[-1].bias[0] -= 1e-3
        CrashingDeepFool.chunks = None


def test_save_writes_the_command_lines_files_and_the_report_reads_them(linear, test_digits, tmp_path):
    from robustness_bias.report.cli import main as report

    images, labels = test_digits
    result = audit(linear, images, labels, sensitive_features=ink_and_site(images), progress=False,
                   estimators=["exact", "deepfool"])
    folder = result.save(tmp_path / "job", dataset="digits", model="logreg")
    final = folder / "audits" / "final"
    pd.testing.assert_frame_equal(read_records(final), result.records)
    pd.testing.assert_frame_equal(read_summary(final), result.summary)
    assert pd.read_csv(final / "summary.csv").shape == result.summary.shape
    assert json.loads((final / "chunks.json").read_text())["counts"]["exact"]["computed"] == 1
    for name in ("final_survival_ink×site.png", "final_sigma.png"):
        assert (folder / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    figure = result.survival_figure()
    assert [axes.get_title() for axes in figure.axes] == ["exact", "deepfool"]
    assert result.sigma_figure(tmp_path / "sigma.png") == tmp_path / "sigma.png"

    tables = report([str(tmp_path / "job"), "--out", str(tmp_path / "report"), "--only", "sigma_final"])
    sigma = tables["sigma_final"]
    assert not sigma.empty and set(sigma["model"]) == {"logreg"}


def test_importing_the_package_loads_nothing_and_the_api_no_lightning():
    # the API checks its options by the command line's schema (config.py), which Hydra's ConfigStore holds
    probe = ("import sys, robustness_bias; assert 'torch' not in sys.modules; robustness_bias.audit; "
             "assert not [m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')]")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert robustness_bias.audit is audit and robustness_bias.AuditResult is AuditResult


def test_the_figures_leave_the_users_matplotlib_backend_alone():
    """A notebook's backend (inline) must survive importing the API and drawing: the figures are made
    without pyplot and returned for the notebook to show."""
    probe = ("import matplotlib, robustness_bias.api, robustness_bias.report.publish; "
             "from robustness_bias.report.figures import sigma_figure; import pandas as pd; "
             "summary = pd.DataFrame({'estimator': ['deepfool'] * 3, 'partition': ['site'] * 3, "
             "'group': ['(all)', 'a', 'b'], 'sigma': [float('nan'), -0.2, 0.2], 'sigma_low': [float('nan'), -0.3, 0.1], "
             "'sigma_high': [float('nan'), -0.1, 0.3], 'p_adjusted': [float('nan'), 0.01, 0.01], "
             "'correct': [20, 10, 10]}); figure = sigma_figure(summary, None); "
             "from matplotlib.figure import Figure; assert isinstance(figure, Figure), figure; "
             "print(matplotlib.get_backend())")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MPLBACKEND": "svg"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["svg"]


@pytest.mark.slow
def test_the_example_runs(tmp_path):
    # one thread: a network this small spends more on splitting its work than on the work, and a shared
    # CI machine makes that worse
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "audit_torchvision.py"), "--out", str(tmp_path),
                           "--quiet"], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("accuracy on the 360 audited digits:") and float(lines[0].split()[-1]) > 0.5
    assert any(line.startswith("heavy") for line in lines) and any(line.startswith("light") for line in lines)
    assert (tmp_path / "survival_by_ink.png").read_bytes()[:4] == b"\x89PNG"


def test_plans_update_or_replace_the_command_lines_plan_by_name():
    """``plans=`` takes the command line's audit.plan.<estimator> (config/job.py): a dict updates its fields, an
    EstimatorPlan replaces it; a misspelled field or an estimator not audited is one line, before any work."""
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    (_, updated), = plan_of(["rs"], {"rs": {"chunk_size": 8}}, None, mlp).values()
    assert (updated.every_nth, updated.batch_size, updated.chunk_size) == (5, 16, 8)   # smoothing's plan, updated
    (_, replaced), = plan_of(["cw"], {"cw": EstimatorPlan(batch_size=4)}, {"cw": 3}, mlp).values()
    assert (replaced.every_nth, replaced.batch_size, replaced.chunk_size) == (3, 4, 256)
    with pytest.raises(ValueError, match=r"plans\['cw'\] has unknown keys \['chunksize'\]"):
        plan_of(["cw"], {"cw": {"chunksize": 8}}, None, mlp)
    with pytest.raises(ValueError, match=r"plans for \['fmn'\], which are not among the estimators"):
        plan_of(["cw"], {"fmn": {}}, None, mlp)
    with pytest.raises(ValueError, match=r"plans\['cw'\]\.batch_size=0: must be a whole number ≥ 1"):
        plan_of(["cw"], {"cw": {"batch_size": 0}}, None, mlp)
