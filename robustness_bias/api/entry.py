"""``robustness_bias.audit(model, X, y, sensitive_features=...)``: the audit for notebooks and scripts.

Any ``nn.Module`` on any images in [0,1], with group memberships given as fairlearn takes them. The
command line's own parts do the work: its plan builder and fingerprint (auditing/plan.py,
config/fingerprint.py), the engine and the auditor, which writes the records (auditing/), the publisher,
which summarizes and draws them (report/publish.py). So the records, summaries and figures are the command
line's, column for column, and an audit given a ``folder`` resumes by chunk as a command-line job does.
Its defaults are the command line's, read from the schema (config/job.py, config/estimators.py). No
Lightning and no Hydra here (tests/test_layout.py).
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path

import pyarrow.parquet as pq
from torch import nn

from ..analysis.summary import summary_settings
from ..auditing import Auditor, Planned, Samples, fitting_plan
from ..auditing.logits import margin_readers
from ..config.fingerprint import estimator_settings, fingerprint
from ..config.job import AuditConfig, EstimatorPlan, Significance, default_plans
from ..config.rules import check_rules, check_values
from ..estimators import CarliniWagner, DeepFool, Estimator, ExactLinear, FastMinimumNorm, RandomizedSmoothing
from ..records import audit_folder, intersection_name, read_chunk_counts, read_records, read_summary, weights_hash
from ..report.publish import Publisher
from .inputs import AuditedImages, Source, groups_of, sample_index_of
from .model import check_precision, class_names_of, device_of, normalization_of, prepared
from .result import TAG, AuditResult

log = logging.getLogger(__name__)

# The estimators by the command line's names, each at its schema's defaults (ESTIMATORS: the default four; NAMED:
# these and those run only when named), and the command line's plans (audit.plan's defaults).
ESTIMATORS = {"exact": ExactLinear, "deepfool": DeepFool, "cw": CarliniWagner, "rs": RandomizedSmoothing}
NAMED = {**ESTIMATORS, "fmn": FastMinimumNorm}
DEFAULT = AuditConfig()   # the command line's audit.* defaults


def audit(model: nn.Module, X, y=None, *, sensitive_features=None, estimators=None, plans: Mapping | None = None,
          normalization=None, device=None, every_nth: int | Mapping[str, int] | None = None,
          conditional: bool = DEFAULT.conditional, failures: str = DEFAULT.failures, tau_max=DEFAULT.tau_max,
          rb_quantiles: Sequence[float] = tuple(DEFAULT.rb_quantiles), min_group_size: int = DEFAULT.min_group_size,
          significance: Mapping | None = None, class_names: Sequence[str] | None = None, sample_index=None,
          folder: str | Path | None = None, progress: bool = DEFAULT.progress, best: bool = DEFAULT.best,
          adjust_for: Sequence[str] = tuple(DEFAULT.adjust_for)) -> AuditResult:
    """Audit ``model`` for robustness bias on the images ``X``: how far each correctly classified image
    lies from the decision boundary, and σ(P), RB(P, τ) per group.

    ``X``: a float tensor (N, C, H, W) in [0,1] pixel space with ``y`` its labels, or a ``Dataset``
    (or a ``DataLoader`` of one, read in the dataset's own order) whose items start with (image, label).
    ``sensitive_features``: a DataFrame (one partition per column, their intersection too when there
    are several), a dict of arrays or one array, a group per image; the class is always a partition.
    ``estimators``: names among exact, deepfool, cw, rs (as the command line's defaults) and fmn, configured
    :class:`~robustness_bias.estimators.Estimator` objects, or a dict name → either; by default all four,
    less those that cannot measure the model (exact needs an affine one). ``plans``: how each runs, by name,
    as :class:`~robustness_bias.config.job.EstimatorPlan` (the command line's ``audit.plan.<estimator>``) or a
    dict of its fields over the command line's plan for that name; ``every_nth`` (one number, or one per name)
    is a shortcut for its field of the same name. ``normalization``: ``{"mean": ..., "std": ...}`` (or a
    torchvision ``Normalize``) that the model expects applied first: distances stay in pixel space.
    ``device``: where to run (the model is moved there for the call and back after; by default it
    stays where it is). The summary options are the command line's ``audit.*`` with its defaults.
    ``sample_index``: an id per image, as the records' ``sample_index`` (by default 0..N−1;
    smoothing seeds its noise by it). ``folder``: write the command line's files there while auditing;
    an interrupted call resumes from its last chunk, and a finished one is read back. ``best``: also
    record, per sample, the smallest distance any of the attacks found, as estimator ``best``
    (the command line's ``audit.best``). ``adjust_for``: sensitive features (or ``"class"``) to adjust σ for,
    as the command line's ``audit.adjust_for``: ``by_group`` then adds σ with each group's rest reweighted to the
    group's own mix of them (docs/design.md, "σ adjusted for other attributes").

    The model is audited in eval mode; each module's mode is restored after. Before any estimator runs,
    one forward pass on the first images checks what can be checked cheaply: a model of float32
    parameters (images of any float type are measured in float32), on a device that exists, taking
    the images as laid out (channels first), whose outputs are logits (probabilities are refused, but for
    smoothing alone; log-probabilities are audited as the logits they equal, with a warning:
    auditing/logits.py).
    """
    device = device_of(device)
    check_precision(model)
    source = Source.of(X, y)
    index = sample_index_of(sample_index, len(source))
    groups = groups_of(sensitive_features, len(source))
    normalize = normalization_of(normalization)
    options = summary_options(conditional, failures, tau_max, rb_quantiles, min_group_size, significance,
                              adjust_for, ["class", *groups])
    chosen = list(groups) or ["class"]
    settings = summary_settings(options, ["class", *groups], chosen)
    with prepared(model, normalize, device) as audited:
        planned = plan_of(estimators, plans, every_nth, audited)
        names = class_names_of(audited, source, class_names, margin_readers(planned))
        data = AuditedImages(source, index, names, groups)
        job = fingerprint({"api": data.fingerprint(), "summary": settings, **({"best": True} if best else {}),
                           "estimators": {name: estimator_settings(*pair) for name, pair in planned.items()}})
        with ExitStack() as stack:
            out = Path(folder) if folder is not None else \
                Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="robustness_bias-")))
            publisher = Publisher(out / "figures" if folder is not None else None, intersection_name(chosen),
                                  settings, in_training=False)
            auditor = Auditor(planned, Samples(data, index), out, partition=chosen, settings_hash=job,
                              progress=progress, publish=publisher, best=best, in_training=False)
            written = audit_folder(out, TAG)
            if folder is not None and finished(auditor, written, weights_hash(audited)):
                log.info("%s already holds this audit: read back", written)
            else:
                auditor(audited, 0, [TAG])
            result = AuditResult(read_records(written), read_summary(written), settings, auditor.partition_name,
                                 list(groups), read_chunk_counts(written), type(model).__name__)
    if folder is not None:
        result.write_result(Path(folder))
    return result


def summary_options(conditional, failures, tau_max, rb_quantiles, min_group_size, significance, adjust_for,
                    attributes: list[str]) -> dict:
    """The summary's options, checked by the command line's rules (the schema of ``audit``)."""
    adjust_for = [adjust_for] if isinstance(adjust_for, str) else list(adjust_for)
    check_values(AuditConfig, "", conditional=conditional, failures=failures, tau_max=tau_max,
                 rb_quantiles=list(rb_quantiles), min_group_size=min_group_size, adjust_for=adjust_for)
    known = [spec.name for spec in dataclasses.fields(Significance)]
    unknown = sorted(set(significance or {}) - set(known))
    if unknown:
        raise ValueError(f"significance has unknown keys {unknown}: use {known}")
    given = Significance(**(significance or {}))
    check_rules(given, "significance")
    missing = [a for a in adjust_for if a not in attributes]
    if missing:
        raise ValueError(f"adjust_for={adjust_for}: no sensitive feature {missing}. Fix: adjust for some of "
                         f"{attributes}, or pass {missing} in sensitive_features")
    return {"conditional": conditional, "failures": failures, "tau_max": tau_max, "rb_quantiles": list(rb_quantiles),
            "min_group_size": min_group_size, "significance": dataclasses.asdict(given), "adjust_for": adjust_for}


def plan_of(estimators, plans, every_nth, model: nn.Module) -> Planned:
    """The estimators as the engine takes them (auditing/plan.py, as the command line builds them): by name at
    their defaults, or as given, each with the command line's plan for its name, updated by ``plans`` and
    ``every_nth``. Of the default four, those that cannot measure ``model`` are skipped (as under
    ``audit.skip_unfit_estimators``); one asked for is an error."""
    chosen = list(ESTIMATORS) if estimators is None else estimators
    if isinstance(chosen, (str, Estimator)):
        chosen = [chosen]
    named = list(chosen.items()) if isinstance(chosen, Mapping) else [(_name(spec), spec) for spec in chosen]
    if len({name for name, _ in named}) != len(named):
        raise ValueError(f"estimators {[name for name, _ in named]}: each name once (pass a dict to name them)")
    unknown = sorted(set(plans or {}) - {name for name, _ in named})
    if unknown:
        raise ValueError(f"plans for {unknown}, which are not among the estimators {[name for name, _ in named]}")
    made, planned = {}, {}
    for name, spec in named:
        if isinstance(spec, str):
            if spec not in NAMED:
                raise ValueError(f"unknown estimator {spec!r}: use one of {list(NAMED)}, or an Estimator object")
            spec = NAMED[spec]()
        if not isinstance(spec, Estimator):
            raise TypeError(f"estimator {name!r} is a {type(spec).__name__}: give a name or an Estimator")
        made[name], planned[name] = spec, _plan(name, (plans or {}).get(name), every_nth)
    return fitting_plan(made, planned, model, skip_unfit=estimators is None, one_audit=True, warn_skipped=False)


def _plan(name: str, given, every_nth) -> EstimatorPlan:
    """The command line's plan for ``name`` (EstimatorPlan's defaults for a name it has none for), replaced
    by ``given`` (an EstimatorPlan) or updated by it (a dict), then by ``every_nth``; checked by its rules."""
    plan = given if isinstance(given, EstimatorPlan) else default_plans().get(name, EstimatorPlan())
    if isinstance(given, Mapping):
        fields = [spec.name for spec in dataclasses.fields(EstimatorPlan)]
        if set(given) - set(fields):
            raise ValueError(f"plans[{name!r}] has unknown keys {sorted(set(given) - set(fields))}: use {fields}")
        plan = dataclasses.replace(plan, **given)
    elif given is not None and not isinstance(given, EstimatorPlan):
        raise TypeError(f"plans[{name!r}] is a {type(given).__name__}: give an EstimatorPlan or a dict of its fields")
    nth = every_nth.get(name) if isinstance(every_nth, Mapping) else every_nth
    if nth is not None:
        plan = dataclasses.replace(plan, every_nth=nth)
    check_rules(plan, f"plans[{name!r}]" if nth is None or isinstance(every_nth, Mapping) else "")
    return plan


def _name(spec) -> str:
    return spec if isinstance(spec, str) else getattr(spec, "name", type(spec).__name__)


def finished(auditor: Auditor, written: Path, weights: str) -> bool:
    """Whether ``written`` holds this very audit, published: the same settings and the same weights."""
    if not auditor.finished(TAG, 0):
        return False
    stored = pq.read_table(written / "records.parquet", columns=["weights_hash"]).column(0)
    return len(stored) > 0 and stored[0].as_py() == weights
