"""The audit's plan: the estimators that can measure a model, each with how it runs. The command line and the
Python API build theirs here, from estimators they made and plans of the schema (``audit.plan.<estimator>``)."""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable, Mapping

from torch import nn

from ..config.job import AUDIT_TAGS, EstimatorPlan
from ..config.rules import ConfigError
from ..estimators import Estimator, EstimatorMismatch, RandomizedSmoothing
from .engine import Planned

log = logging.getLogger(__name__)


def fitting_plan(estimators: Mapping[str, Estimator], plans: Mapping[str, EstimatorPlan], model: nn.Module, *,
                 skip_unfit: bool, one_audit: bool, hint: Callable[[list[str]], str] | None = None,
                 warn_skipped: bool = True) -> Planned:
    """Each of ``estimators`` with its plan (``plans[name]``, else :class:`EstimatorPlan`'s defaults).

    An estimator that cannot measure ``model`` (exact needs an affine one) is an error naming why, with
    ``hint(the fitting ones)`` appended, or, under ``skip_unfit`` while some fit, skipped with a warning (sweeps
    over models that mix linear and non-linear ones; ``warn_skipped=False``: logged as news, not as a warning, where
    the caller chose none of them by name). ``one_audit`` (``mode=audit``, the Python API): the one
    audit measures with every estimator, whatever its ``after``; a training run whose plan never measures
    the final model is refused before it trains. A plan's ``compile`` reaches smoothing here
    (:func:`compiled_smoothing`), the attacks in the engine (engine.compiles).
    """
    unfit = {}
    for name, estimator in estimators.items():
        try:
            estimator.check_model(model)
        except EstimatorMismatch as error:
            unfit[name] = error
    fitting = [name for name in estimators if name not in unfit]
    if unfit and not (skip_unfit and fitting):
        raise EstimatorMismatch(" ".join(str(error) for error in unfit.values())
                                + (hint(fitting) if hint is not None and fitting else ""))
    if unfit:
        log.log(logging.WARNING if warn_skipped else logging.INFO, "skipping estimator(s) %s: they cannot measure "
                "this model", sorted(unfit))
    planned = {}
    for name in fitting:
        plan = plans.get(name) or EstimatorPlan()
        planned[name] = (compiled_smoothing(estimators[name], plan),
                         dataclasses.replace(plan, after=list(AUDIT_TAGS)) if one_audit else plan)
    if not any("final" in plan.after for _, plan in planned.values()):
        raise ConfigError(f"no selected estimator measures the final model (audit.plan.<estimator>.after). Fix: pass "
                          f"audit.plan.{fitting[0]}.after=[final]")
    return planned


def compiled_smoothing(estimator: Estimator, plan: EstimatorPlan) -> Estimator:
    """Smoothing under a plan's ``compile``: a copy with its own ``compile`` on, whose forward passes get buffers
    padded to one shape (one compilation), rather than the engine's compiled model, which would meet every batch
    size the fastest-batch probe tries. Any other estimator, and smoothing that compiles already, as given."""
    if not (plan.compile and isinstance(estimator, RandomizedSmoothing)) or estimator.compile:
        return estimator
    twin = copy.copy(estimator)
    twin.compile = True
    return twin
