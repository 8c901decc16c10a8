"""The schema of ``conf/config.yaml``: the job's own settings and the audit's, each default given here once.

``audit.*`` is set nowhere else: conf/config.yaml leaves it to these defaults, the Python API
(robustness_bias.api) takes its keyword defaults from them, and so does the summary (analysis/summary.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Dict, List

from omegaconf import MISSING

from .rules import (ATTRIBUTES, FLAG, QUANTILES, TAU_MAX, ConfigError, Rule, elsewhere, one_of, probability, setting,
                    whole)

AUDIT_TAGS = ("first", "middle", "final")   # the audits of a training run (the paper's Figs. 7 and 8)
TAGS = Rule(lambda v: isinstance(v, list) and v and set(v) <= set(AUDIT_TAGS),
            f"must list one or more of {', '.join(AUDIT_TAGS)}", "[final]")


@dataclass
class Significance:
    """Per group: a bootstrap interval of σ, a permutation p-value, the Benjamini–Hochberg adjustment."""

    resamples: int = setting(whole(0, 1000), 1000)        # 0: no interval
    permutations: int = setting(whole(0, 1000), 1000)     # 0: no test (every p-value is 1)
    level: float = setting(probability(0.95), 0.95)
    seed: int = setting(whole(0, 0), 0)


@dataclass
class EstimatorPlan:
    """How the audit runs one estimator (``audit.plan.<estimator>``): on every ``every_nth`` test image (the
    paper's smoothing: every 5th), working on ``batch_size`` samples at once (the attacks' pool width: their
    pool runs on from one chunk into the next; halved after running out of GPU memory), storing each chunk of
    ``chunk_size`` samples once done (a rerun after a crash resumes from the finished chunks), at ``precision``
    (fp32, or bf16 under autocast, named in the records: the attacks search in bf16 and decide which points are
    adversarial, and how far they lie, in fp32), with ``channels_last`` images, its passes through ``torch.compile``
    (``compile``), in the audits of a training run that ``after``
    names (e.g. [final] for an estimator too costly to run three times; mode=audit and the Python API
    measure once, with every estimator)."""

    every_nth: int = setting(whole(1, 1), 1)
    # Batch sizes change DeepFool's distances by float rounding only (docs/benchmarks.md), and chunks of another
    # batch size are never reused (records.ChunkStore): both may change between a run and its resume.
    batch_size: int = setting(whole(1, 256), 256, shapes_results=False)
    chunk_size: int = setting(whole(1, 256), 256, shapes_results=False)
    precision: str = setting(one_of("fp32", "bf16"), "fp32")
    # the images in channels-last memory (NHWC) for this estimator alone: on a CPU a convolutional model's passes run
    # faster so (docs/benchmarks.md, "Faster passes"), to float rounding the same distances; off by default, since a
    # model that calls .view() on its features fails on channels-last tensors
    channels_last: bool = setting(FLAG, False, shapes_results=False)
    # the attacks' passes (forward and backward) through torch.compile, smoothing's forward passes through its own:
    # the same distances to float rounding (docs/design.md, "Faster passes"); off by default, since on a CPU the
    # attacks' compiled passes ran slower than eager ones and each model costs a compilation (docs/benchmarks.md)
    compile: bool = setting(FLAG, False, shapes_results=False)
    after: List[str] = setting(TAGS, list(AUDIT_TAGS))


def default_plans() -> dict[str, EstimatorPlan]:
    """Each estimator's plan where it differs from :class:`EstimatorPlan`'s defaults: the attacks' chunks
    hold 1,024 samples (their pool drains once per chunk boundary it cannot cross: at the audit's end);
    smoothing's are fewer and longer samples, on every 5th image as in the paper."""
    return {"exact": EstimatorPlan(), "deepfool": EstimatorPlan(chunk_size=1024), "cw": EstimatorPlan(chunk_size=1024),
            "rs": EstimatorPlan(every_nth=5, batch_size=16, chunk_size=32), "fmn": EstimatorPlan(chunk_size=1024)}


@dataclass
class AuditConfig:
    """``audit``: each estimator's plan (the selected ones are used), which shard of the audit a job takes,
    and how σ(P) and RB(P, τ) are computed from the distances (the paper's Eq. 1–3)."""

    plan: Dict[str, EstimatorPlan] = field(default_factory=default_plans)
    # with num_shards > 1 this job audits every num_shards-th sample from the shard-th; the report merges the shards
    shard: int = setting(whole(0, 0), 0, shapes_results=False)
    num_shards: int = setting(whole(1, 1), 1, shapes_results=False)
    conditional: bool = setting(FLAG, True)   # survival curves among correctly classified points (paper Eq. 1–3)
    failures: str = setting(one_of("censor", "drop"), "censor")   # failed attacks count as beyond τ_max, or are left out
    tau_max: Any = setting(TAU_MAX, "pooled_max")   # pooled_max (the audit's largest finite distance) or a number
    rb_quantiles: List[float] = setting(QUANTILES, [0.25, 0.5, 0.75])   # RB(P, τ) at these quantiles of the distances
    progress: bool = setting(FLAG, True, shapes_results=False)
    min_group_size: int = setting(whole(1, 5), 5)   # groups with fewer attacked points get no σ (too_small)
    significance: Significance = field(default_factory=Significance)
    # σ also adjusted for these attributes, e.g. [class, gender]: each group's rest reweighted to the group's own mix
    # of them (adjusted_* columns; docs/design.md "σ adjusted for other attributes"); the report's AFT ratios too
    adjust_for: List[str] = setting(ATTRIBUTES, [])
    skip_unfit_estimators: bool = setting(FLAG, False)   # true: skip, with a warning, estimators unfit for the model
    # also record, per sample, the smallest distance any attack (deepfool, cw, fmn) found, as estimator best, on the
    # samples all of them measured (auditing/best.py)
    best: bool = setting(FLAG, False)

    def check(self, key: str) -> None:
        if self.shard >= self.num_shards:
            raise ConfigError(f"{key}.shard={self.shard} {key}.num_shards={self.num_shards}: the shard must be a whole "
                              f"number from 0 to num_shards − 1. Fix: pass {key}.shard=0 … {self.num_shards - 1}")


@dataclass
class JobConfig:
    """The composed config: one node per config group, and the job's own settings."""

    learning_rates: Dict[str, float] = setting(None, shapes_results=False)   # acts through optim.lr
    seed: int = setting(whole(0, 0))
    mode: str = setting(one_of("train", "audit"))   # train: train, then audit; audit: audit model.checkpoint
    name: str = MISSING
    dataset: Any = MISSING
    imagenet: Any = MISSING   # before model, whose torchvision networks take their settings from it
    model: Any = MISSING
    estimator: Dict[str, Any] = field(default_factory=dict)
    partition: Any = MISSING
    trainer: Any = MISSING
    logger: Any = elsewhere()
    regularizer: Any = MISSING
    paths: Any = elsewhere()
    optim: Any = MISSING
    scheduler: Any = MISSING
    module: Any = MISSING
    callbacks: Any = elsewhere()   # the epoch checkpoint's path is inside the job's folder
    audit: AuditConfig = field(default_factory=AuditConfig)

    def check(self, key: str) -> None:
        if not self.estimator:
            raise ConfigError("no estimator is configured. Fix: pass estimator=[exact] (or another list of estimators)")
        if self.mode == "audit" and not self.model.checkpoint:
            raise ConfigError("mode=audit needs a trained model. Fix: pass model.checkpoint=/path/to/checkpoint")


def selected_estimators(estimators: Mapping) -> list[str]:
    """The estimators a job runs: those of ``estimator`` with a ``_target_``. An experiment may set parameters of
    estimators that a command line then deselects (``estimator=[deepfool] experiment=utk_quick``): those come
    without one."""
    return [name for name, spec in estimators.items() if isinstance(spec, Mapping) and "_target_" in spec]
