"""The robustness-bias regularizer: it reaches the parameters, vanishes at α = 0, and mitigates a planted bias."""

import pytest
import torch

from robustness_bias.models import logreg
from robustness_bias.config.rules import ConfigError
from robustness_bias.pipeline import run
from robustness_bias.training.regularizer import RobustnessBiasPenalty, proxy_distance

SHAPE = (1, 4, 4)
NORM = {"mean": [0.5], "std": [0.25]}


def _batch(seed=0):
    torch.manual_seed(seed)
    x = torch.rand(32, *SHAPE)
    attributes = (torch.arange(32) % 2)[:, None]           # two groups, alternating
    return x, attributes


def _penalty(alpha, group_code=1):
    return RobustnessBiasPenalty(alpha=alpha, tau=0.05, temperature=0.05, attribute_column=0, group_code=group_code,
                                 group_names=["reference", "planted"], running_weight=0.9)


def test_proxy_distance_is_exact_on_a_linear_model():
    from robustness_bias.estimators import ExactLinear

    model = logreg(SHAPE, 2, NORM).eval()
    x, _ = _batch()
    y = model(x).argmax(1)
    _, distance = proxy_distance(model, x, y)
    torch.testing.assert_close(distance.detach(), ExactLinear()(model, x, y).distance, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("group_code", [1, None])
def test_penalty_gradient_reaches_the_parameters_and_vanishes_at_alpha_zero(group_code):
    model = logreg(SHAPE, 2, NORM)
    x, attributes = _batch()
    y = model(x).argmax(1)                                  # every point correctly classified
    for alpha, nonzero in ((1.0, True), (0.0, False)):
        penalty_of = _penalty(alpha, group_code)
        _, first, _, _ = penalty_of(model, x, y, attributes)
        assert first is None                                # which side leads is not known before a batch is seen
        model.zero_grad()
        _, penalty, _, means = penalty_of(model, x, y, attributes)
        penalty.backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        assert bool(grads.abs().sum() > 0) is nonzero
        assert set(means) == ({"planted", "rest"} if group_code == 1 else {"reference", "planted"})


def test_the_penalty_is_unbiased_where_the_batch_gap_is_not():
    """Two exchangeable groups (the same distances): RB̃ is 0. A batch's absolute gap of shares is not (its
    sampling noise), and descending it saturates every share; the penalty, the batch's gap signed by the
    running shares' lead, averages 0 over batches, and its running RB̃ tends to 0."""
    torch.manual_seed(1)
    model = logreg(SHAPE, 2, NORM)
    penalty_of = RobustnessBiasPenalty(alpha=1.0, tau=0.0, temperature=0.05, attribute_column=0, group_code=1,
                                       group_names=["reference", "planted"], running_weight=0.95)
    absolute, signed = [], []
    for _ in range(400):
        x = torch.rand(20, *SHAPE)
        attributes = torch.randint(0, 2, (20, 1))
        y = model(x).argmax(1)
        _, penalty, gap, _ = penalty_of(model, x, y, attributes)
        beyond = torch.sigmoid(proxy_distance(model, x, y)[1].detach() / 0.05)
        planted = attributes[:, 0] == 1
        absolute.append(float(beyond[planted].mean() - beyond[~planted].mean()))
        if penalty is not None:
            signed.append(float(penalty))
    absolute, signed = torch.tensor(absolute), torch.tensor(signed)
    noise = float(signed.std() / len(signed) ** 0.5)
    assert float(absolute.abs().mean()) > 10 * noise                  # the batch's |gap| is biased well above 0
    assert abs(float(signed.mean())) < 3 * noise                      # the penalty is not
    assert gap < float(absolute.abs().mean()) / 2                     # the running RB̃ is below the batch's |gap|


def test_a_batch_without_the_group_falls_back_to_cross_entropy():
    model = logreg(SHAPE, 2, NORM)
    x, _ = _batch()
    y = model(x).argmax(1)
    penalty_of = _penalty(1.0)
    for _ in range(2):   # the second batch would have a lead, were both sides there
        _, penalty, _, _ = penalty_of(model, x, y, torch.zeros(32, 1, dtype=torch.long))
        assert penalty is None


def test_the_penalty_is_built_from_its_config_on_the_dataset(make_config):
    from hydra.utils import instantiate

    from robustness_bias.assembly import build_penalty

    cfg = make_config("dataset=synthetic", "dataset.n_samples=100", "partition=group", "regularizer=rb",
                      "regularizer.attribute=group", "regularizer.group=planted", "regularizer.alpha=0.5")
    datamodule = instantiate(cfg.dataset)
    datamodule.setup()
    penalty = build_penalty(cfg, datamodule)
    assert isinstance(penalty, RobustnessBiasPenalty) and (penalty.alpha, penalty.tau) == (0.5, 2.0)
    assert penalty.attribute_column == list(datamodule.table.attributes).index("group")
    assert penalty.group_names[penalty.group_code] == "planted"
    assert build_penalty(make_config("dataset=synthetic", "regularizer=none"), datamodule) is None


def _sigma_and_accuracy(make_config, *overrides):
    result = run(make_config("dataset=synthetic", "dataset.shared_separation=1.2", "partition=group",
                             "estimator=[deepfool]", "logger=none", *overrides))
    return result["sigma"]["deepfool/group=planted"], result["test_accuracy"]


def test_regularizer_shrinks_the_planted_bias_at_little_cost(make_config, tmp_path_factory):
    original, original_accuracy = _sigma_and_accuracy(make_config)
    # a fresh output folder, or the finished original job would be found and skipped
    regularized, regularized_accuracy = _sigma_and_accuracy(
        make_config, "regularizer=rb", "regularizer.attribute=group", "regularizer.group=planted",
        "regularizer.tau=1.0", f"paths.output_dir={tmp_path_factory.mktemp('regularized')}")
    assert original < -0.2
    assert abs(regularized) <= 0.6 * abs(original)
    assert regularized_accuracy >= original_accuracy - 0.05


@pytest.mark.parametrize(("override", "message"), [("regularizer.attribute=race", "regularizer.attribute=race"),
                                                   ("regularizer.group=nobody", "regularizer.group=nobody"),
                                                   ("regularizer.temperature=0", "regularizer.temperature=0")])
def test_impossible_regularizer_settings(make_config, override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        run(make_config("dataset=synthetic", "partition=group", "estimator=[exact]", "logger=none", "regularizer=rb",
                        "regularizer.attribute=group", "regularizer.group=planted", override))


def test_the_running_shares_travel_in_the_checkpoint():
    """A resumed run goes on with the lead it had: the module's checkpoint holds the penalty's running shares
    (NaN for a side not seen yet), as plain data that a weights_only load reads."""
    import io

    from robustness_bias.training import Classifier

    model = logreg(SHAPE, 2, NORM)
    x, attributes = _batch()
    trained = Classifier(model, optimizer=torch.optim.SGD, penalty=_penalty(1.0))
    trained.penalty(model, x, model(x).argmax(1), attributes)
    trained.penalty.running[0] = float("nan")
    checkpoint = {}
    trained.on_save_checkpoint(checkpoint)
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    buffer.seek(0)
    resumed = Classifier(logreg(SHAPE, 2, NORM), optimizer=torch.optim.SGD, penalty=_penalty(1.0))
    resumed.on_load_checkpoint(torch.load(buffer, weights_only=True))
    torch.testing.assert_close(resumed.penalty.running, trained.penalty.running, equal_nan=True)
    assert resumed.penalty.running[1].isfinite()
    for crafted in ([0.5], ["0.5", 0.5], "0.5,0.5", [[0.5], 0.5]):   # not one number per side: ignored, not a traceback
        fresh = _penalty(1.0)
        Classifier(logreg(SHAPE, 2, NORM), optimizer=torch.optim.SGD, penalty=fresh).on_load_checkpoint(
            {"penalty_running_shares": crafted})
        assert fresh.running.isnan().all(), crafted
