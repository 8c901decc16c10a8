"""audit.plan.<estimator>.compile (docs/design.md, "Faster passes"): the attacks run on one torch.compile'd model per
audit and find the same distances as eager passes to float rounding (relative 1e-5; on this model they differ by
at most 4e-7); smoothing compiles its own forward passes instead."""

import pytest
import torch
import torch._dynamo
from torch import nn
from torch._dynamo.eval_frame import OptimizedModule

from conftest import compose_config
from robustness_bias import audit
from robustness_bias.auditing import engine, fitting_plan
from robustness_bias.config.fingerprint import job_fingerprint
from robustness_bias.config.job import EstimatorPlan
from robustness_bias.estimators import CarliniWagner, DeepFool, FastMinimumNorm, RandomizedSmoothing

TOLERANCE = 1e-5   # relative, compiled against eager distances


def recording(attack: type, seen: list):
    """``attack`` that notes the model each of its streams runs on."""
    class Recording(attack):
        def stream(self, model, chunks, batch_size, progress=None):
            seen.append(model)
            return super().stream(model, chunks, batch_size, progress)
    return Recording


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3)).eval()
    x = torch.rand(24, 3, 8, 8)
    return model, x, model(x).argmax(1).numpy()


def audited(images, compile: bool, seen: list):
    model, x, labels = images
    attacks = {"deepfool": recording(DeepFool, seen)(),
               "cw": recording(CarliniWagner, seen)(binary_search_steps=2, steps=20),
               "fmn": recording(FastMinimumNorm, seen)(steps=20)}
    plans = {name: {"compile": compile, "batch_size": 10} for name in attacks}
    return audit(model, x, labels, estimators=attacks, plans=plans, progress=False).records


def assert_same_distances(eager, compiled):
    assert compiled["success"].equals(eager["success"]) and eager["success"].sum() > 0
    ok = eager["success"]
    torch.testing.assert_close(torch.as_tensor(compiled.loc[ok, "distance"].to_numpy()),
                               torch.as_tensor(eager.loc[ok, "distance"].to_numpy()), rtol=TOLERANCE, atol=0)


def test_compiled_attacks_find_the_eager_distances_on_one_compiled_model(images):
    torch._dynamo.reset()
    plain, compiled = [], []
    eager = audited(images, False, plain)
    ours = audited(images, True, compiled)
    assert not any(isinstance(model, OptimizedModule) for model in plain)
    assert len(compiled) == 3 and all(isinstance(model, OptimizedModule) for model in compiled)
    assert len({id(model) for model in compiled}) == 1, "compiled once per audit, for every attack"
    assert torch._dynamo.utils.counters["frames"]["ok"] > 0, "dynamo compiled the model's forward"
    assert_same_distances(eager, ours)


def test_an_attack_past_the_recompile_limit_runs_eagerly_with_the_same_distances(images, monkeypatch):
    """Beyond the limit dynamo runs the model's frame eagerly: slower, never other results."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    monkeypatch.setattr(engine, "RECOMPILE_LIMIT", 1)
    assert_same_distances(audited(images, False, []), audited(images, True, []))
    frames = torch._dynamo.utils.counters["frames"]
    assert frames["ok"] == 1 < frames["total"], "one graph compiled, then the limit: the rest ran eagerly"



def test_smoothing_compiles_its_own_forward_passes_and_the_attacks_model_is_left_alone(images):
    model = images[0]
    smoothing = RandomizedSmoothing(n=200, n0=20, forward_batch=64)
    plans = {"rs": EstimatorPlan(compile=True), "deepfool": EstimatorPlan()}
    planned = fitting_plan({"rs": smoothing, "deepfool": DeepFool()}, plans, model, skip_unfit=False, one_audit=True)
    twin, plan = planned["rs"]
    assert twin.compile and not smoothing.compile, "a compiling copy; the caller's estimator is unchanged"
    assert not engine.compiles(twin, plan), "smoothing is not handed the engine's compiled model"
    assert not engine.compiles(*planned["deepfool"])
    _, x, labels = images
    y = torch.as_tensor(labels)
    torch.testing.assert_close(twin(model, x[:4], y[:4]).distance, smoothing(model, x[:4], y[:4]).distance,
                               rtol=0, atol=0)


def test_the_command_lines_plan_compiles_and_leaves_the_fingerprint_and_smoothings_parameters_alone():
    """The plan is the one switch (module.compile compiles the training steps only); a job resumes across it."""
    base = ["estimator=[deepfool,rs]"]
    eager = compose_config(base)
    compiled = compose_config([*base, "audit.plan.deepfool.compile=true", "audit.plan.rs.compile=true"])
    assert compiled.audit.plan.deepfool.compile and compiled.audit.plan.rs.compile
    assert not compiled.estimator.rs.compile and not compose_config([*base, "module.compile=true"]).estimator.rs.compile
    assert job_fingerprint(compiled) == job_fingerprint(eager)
