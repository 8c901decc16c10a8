"""The configuration's schema: each setting's type and range, declared once, as Hydra structured configs.

Hydra checks the types while it composes the config, so ``trainer.max_epochs=abc`` stops there; the
ranges and choices are checked when a job starts, before any data is read (:func:`checked`). Either
way a bad setting is one line naming the key, the value, the rule and a fix (the command line prints
it and exits with code 2), instead of a ValueError from deep inside a model, an optimizer or an
estimator that names no key, or — for ``dataset.image_size=0`` — a silently different run.

Each YAML file of ``conf/`` names its schema first in its defaults list (``/schema/<group>/<name>``);
importing this module registers the schemas in Hydra's ConfigStore.
"""

from __future__ import annotations

import copy
import hashlib
import difflib
import inspect
import logging
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from omegaconf import MISSING, DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from .records import settings_hash

log = logging.getLogger(__name__)


def find_config_dir() -> Path:
    """Hydra's ``conf/``: inside the installed package (the wheel ships it as ``robustness_bias/conf``),
    else at the top of the checkout this package runs from (a clone, an editable install)."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "conf", package.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"no conf/config.yaml in {package} nor in {package.parent}: this installation of "
                            "robustness_bias lacks its configs. Fix: reinstall it from a wheel or a clone")


CONFIG_DIR = find_config_dir()


def overrides_tag(overrides) -> str:
    """``-<8 hex>`` naming a command line's overrides (none: empty), for the job folders ``conf/config.yaml``
    names by what the job is rather than by the clock, so that the same command finds its folder again and
    resumes or skips (docs/design.md, "Reliability")."""
    given = sorted(str(override) for override in overrides or ())
    return "-" + hashlib.sha256("\n".join(given).encode()).hexdigest()[:8] if given else ""


OmegaConf.register_new_resolver("overrides_tag", overrides_tag, replace=True)


class ConfigError(ValueError):
    """A setting is impossible; the message names it and says how to fix it."""


# ---------------------------------------------------------------- rules


def shown(value) -> str:
    """A value as it is written on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(shown(v) for v in value) + "]"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))   # as typed: a float setting holds 0 as 0.0
    return str(value)


@dataclass(frozen=True)
class Rule:
    """What a setting must be: a test, the words for it ("must be …") and a value that passes, for the fix."""

    holds: Callable[[Any], bool]
    text: str
    example: str

    def check(self, key: str, value) -> None:
        if not self.holds(value):
            raise ConfigError(self.broken_by(key, value))

    def broken_by(self, key: str, value) -> str:
        return f"{key}={shown(value)}: {self.text}. Fix: pass {key}={self.example}"


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def whole(minimum: int, example: int) -> Rule:
    return Rule(lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum,
                f"must be a whole number ≥ {minimum}", str(example))


def positive(example: float) -> Rule:
    return Rule(lambda v: _number(v) and v > 0, "must be a positive number", str(example))


def at_least_zero(example: float) -> Rule:
    return Rule(lambda v: _number(v) and v >= 0, "must be a number ≥ 0", str(example))


def fraction(example: float) -> Rule:
    return Rule(lambda v: _number(v) and 0 <= v < 1, "must lie in [0, 1)", str(example))


def probability(example: float) -> Rule:
    return Rule(lambda v: _number(v) and 0 < v < 1, "must lie strictly between 0 and 1", str(example))


def optional(rule: Rule, meaning: str, example: str | None = None) -> Rule:
    """``rule``, or null with the given meaning."""
    return Rule(lambda v: v is None or rule.holds(v), f"{rule.text}, or null {meaning}", example or rule.example)


def one_of(*choices: str) -> Rule:
    return Rule(lambda v: v in choices, f"must be one of {', '.join(choices)}", choices[0])


FLAG = Rule(lambda v: isinstance(v, bool), "must be true or false", "true")
QUANTILES = Rule(lambda v: isinstance(v, list) and all(_number(q) and 0 < q < 1 for q in v),
                 "each must lie strictly between 0 and 1", "[0.25,0.5,0.75]")
ATTRIBUTES = Rule(lambda v: isinstance(v, list) and all(isinstance(a, str) and a for a in v),
                  "must be a list of attribute names", "[class]")
POSITIVES = Rule(lambda v: isinstance(v, list) and all(_number(m) and m > 0 for m in v),
                 "each must be a positive number", "[1.0,0.4]")
PROBABILITIES = Rule(lambda v: isinstance(v, list) and all(_number(q) and 0 < q < 1 for q in v),
                     "each must lie strictly between 0 and 1", "[0.2,0.8]")
AUDIT_TAGS = Rule(lambda v: isinstance(v, list) and v and set(v) <= {"first", "middle", "final"},
                  "must list one or more of first, middle, final", "[final]")
TAU_MAX = Rule(lambda v: v == "pooled_max" or (_number(v) and v > 0), "must be pooled_max or a positive number",
               "pooled_max")


def setting(rule: Rule | None, default=MISSING, *, shapes_results: bool = True):
    """A dataclass field checked against ``rule``; MISSING (the default): every YAML file of the group sets it.

    ``shapes_results=False`` marks what changes only how fast a job runs, where it writes or which shard
    it takes: left out of the job's fingerprint (:func:`results_settings`), so that e.g. a smaller batch
    chosen after running out of memory still resumes, and the shards of one audit share a fingerprint.
    """
    metadata = {"rule": rule, "shapes_results": shapes_results}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def elsewhere(default=MISSING):
    """A field that shapes no result and has no rule: where a job writes or logs."""
    return setting(None, default, shapes_results=False)


# ---------------------------------------------------------------- the job: conf/config.yaml


@dataclass
class Significance:
    """Per group: a bootstrap interval of σ, a permutation p-value, the Benjamini–Hochberg adjustment."""

    resamples: int = setting(whole(0, 1000))        # 0: no interval
    permutations: int = setting(whole(0, 1000))     # 0: no test (every p-value is 1)
    level: float = setting(probability(0.95))
    seed: int = setting(whole(0, 0))


@dataclass
class EstimatorPlan:
    """How the audit runs one estimator (``audit.plan.<estimator>``): on which test images, in what batches
    and chunks, at what precision (robustness_bias.auditing.EstimatorPlan takes these)."""

    every_nth: int = setting(whole(1, 1), 1)      # audit every n-th test image (the paper's smoothing: 5)
    # Batch sizes change DeepFool's distances by float rounding only (docs/benchmarks.md), and chunks of another
    # batch size are never reused (records.ChunkStore): both may change between a run and its resume.
    batch_size: int = setting(whole(1, 256), 256, shapes_results=False)
    chunk_size: int = setting(whole(1, 256), 256, shapes_results=False)  # a crash loses at most one chunk
    precision: str = setting(one_of("fp32", "bf16"), "fp32")
    after: List[str] = setting(AUDIT_TAGS, ["first", "middle", "final"])   # which audits of a training run measure it


@dataclass
class AuditConfig:
    """``audit``: each estimator's plan (the selected ones are used), which shard of the audit a job takes,
    and how σ(P) and RB(P, τ) are computed from the distances (the paper's Eq. 1–3)."""

    plan: Dict[str, EstimatorPlan] = field(default_factory=dict)
    shard: int = setting(whole(0, 0), shapes_results=False)
    num_shards: int = setting(whole(1, 1), shapes_results=False)
    conditional: bool = setting(FLAG)
    failures: str = setting(one_of("censor", "drop"))
    tau_max: Any = setting(TAU_MAX)
    rb_quantiles: List[float] = setting(QUANTILES)
    progress: bool = setting(FLAG, shapes_results=False)
    min_group_size: int = setting(whole(1, 5))
    significance: Significance = MISSING
    adjust_for: List[str] = setting(ATTRIBUTES)   # σ adjusted for these attributes too (adjusted_* columns)
    skip_unfit_estimators: bool = setting(FLAG)
    best: bool = setting(FLAG, False)   # also record the attacks' per-sample best bound as estimator ``best``

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
    audit: AuditConfig = MISSING

    def check(self, key: str) -> None:
        if not self.estimator:
            raise ConfigError("no estimator is configured. Fix: pass estimator=[exact] (or another list of estimators)")
        if self.mode == "audit" and not self.model.checkpoint:
            raise ConfigError("mode=audit needs a trained model. Fix: pass model.checkpoint=/path/to/checkpoint")


# ---------------------------------------------------------------- conf/dataset


@dataclass
class Normalization:
    """Per-channel statistics the model's first layer subtracts and divides by."""

    mean: List[float] = MISSING
    std: List[float] = MISSING


IMAGE_SIZE = optional(whole(1, 64), "to keep the images' own size")
CHANNELS = Rule(lambda v: v in (1, 3) and not isinstance(v, bool), "must be 1 (grey) or 3 (colour)", "3")


@dataclass
class DataConfig:
    """What every data module takes: batches, the validation split and its seed."""

    _target_: str = MISSING
    normalization: Normalization = MISSING
    batch_size: int = setting(whole(1, 64))
    eval_batch_size: int = setting(whole(1, 256))
    num_workers: int = setting(whole(0, 0), shapes_results=False)
    val_fraction: float = setting(fraction(0.1))
    split_seed: int = setting(whole(0, 42))


@dataclass
class DigitsData(DataConfig):
    test_fraction: float = setting(fraction(0.2))


@dataclass
class SyntheticData(DataConfig):
    """Generated images with a planted bias; the data module checks how its numbers relate."""

    test_fraction: float = setting(fraction(0.2))
    n_samples: int = setting(whole(10, 2000))
    n_classes: int = setting(whole(2, 2))
    channels: int = setting(whole(1, 1))
    image_size: int = setting(whole(1, 8))
    separation: float = setting(at_least_zero(2.0))
    noise: float = setting(at_least_zero(0.1))
    planted_share: float = setting(probability(0.3))
    planted_margin: float = setting(positive(0.4))
    shared_separation: float = setting(at_least_zero(0.0))
    stratum_margins: List[float] = setting(POSITIVES)              # []: no strata
    stratum_planted_shares: List[float] = setting(PROBABILITIES)   # one per stratum
    seed: int = setting(whole(0, 0))


@dataclass
class CifarData(DataConfig):
    root: Optional[str] = MISSING
    download: bool = setting(FLAG)
    image_size: Optional[int] = setting(IMAGE_SIZE)


@dataclass
class FileData(DataConfig):
    """Data sets read from image files, some of which may not decode."""

    root: Optional[str] = MISSING
    image_size: Optional[int] = setting(IMAGE_SIZE)
    cache: bool = setting(FLAG)
    on_bad_file: str = setting(one_of("skip", "raise"))   # skip: leave them out, listed; raise: stop, naming them
    # larger image files are refused before decoding (a decompression bomb); whether a run starts, not its results
    max_image_pixels: int = setting(whole(1, 40_000_000), shapes_results=False)


@dataclass
class UTKFaceData(FileData):
    test_fraction: float = setting(fraction(0.2))
    deduplicate: bool = setting(FLAG)
    on_conflict: str = setting(one_of("drop", "keep_first"))


@dataclass
class AdienceData(FileData):
    drop_unknown_gender: bool = setting(FLAG)


@dataclass
class ImageFolderData(FileData):
    test_fraction: float = setting(fraction(0.2))
    csv: str = MISSING
    channels: int = setting(CHANNELS)
    attributes: Optional[List[str]] = None   # null: every column but path, label and split


# ---------------------------------------------------------------- conf/model, conf/imagenet


@dataclass
class PartialConfig:
    """An object the pipeline completes with what the job knows only when it runs (Hydra's ``_partial_``)."""

    _target_: str = MISSING
    _partial_: bool = True


@dataclass
class ModelConfig(PartialConfig):
    """A network builder; the pipeline calls it with the dataset's input shape, classes and normalization."""

    # the learning rate optim.lr takes by default: its family's (learning_rates); only through optim.lr does it
    # shape a result, and there the fingerprint holds it
    lr: float = setting(positive(0.05), MISSING, shapes_results=False)
    checkpoint: Optional[str] = None   # weights to load (mode=audit audits them)


@dataclass
class ImageNetConfig:
    """How the torchvision networks start: from ImageNet weights or from scratch, and at which input size.

    Its own group rather than keys of ``model``: a sweep over several models (logistic regression
    among them, which has neither) sets it once for the torchvision ones.
    """

    pretrained: bool = setting(FLAG)
    input_size: Optional[int] = setting(optional(whole(1, 224), "to keep the dataset's size"))
    download: bool = setting(FLAG, False, shapes_results=False)   # where the weights come from, not what they are


@dataclass
class TorchvisionModel(ModelConfig):
    pretrained: bool = setting(FLAG)
    weights_path: Optional[str] = None
    input_size: Optional[int] = setting(optional(whole(1, 224), "to keep the dataset's size"))
    download: bool = setting(FLAG, False, shapes_results=False)


@dataclass
class SmallCNN(ModelConfig):
    channels: List[int] = MISSING
    hidden: int = setting(whole(1, 64))


@dataclass
class PyramidNet(ModelConfig):
    depth: int = setting(whole(1, 110))   # the builder checks that the units fit it
    alpha: int = setting(whole(0, 64))
    bottleneck: bool = setting(FLAG)


# ---------------------------------------------------------------- conf/estimator


@dataclass
class DeepFoolConfig:
    """DeepFool L2 (an upper bound on the distance to the boundary)."""

    _target_: str = MISSING
    steps: int = setting(whole(1, 100))
    candidates: int = setting(whole(2, 10))
    overshoot: float = setting(at_least_zero(0.02))
    gradients: str = setting(one_of("loop", "batched", "replicated"), shapes_results=False)   # up to rounding
    cuda_graphs: bool = setting(FLAG, shapes_results=False)


@dataclass
class CarliniWagnerConfig:
    """Carlini–Wagner L2 (an upper bound on the distance to the boundary)."""

    _target_: str = MISSING
    binary_search_steps: int = setting(whole(1, 5))
    steps: int = setting(whole(1, 100))
    initial_const: float = setting(positive(0.01))
    confidence: float = setting(at_least_zero(0))
    learning_rate: float = setting(positive(0.4))
    per_dimension: bool = setting(FLAG, False)   # learning_rate / √(input values): a step's L2 length
    abort_early: bool = setting(FLAG)
    warm_start: bool = setting(FLAG, True)
    refine_steps: int = setting(whole(0, 10), 10)
    cuda_graphs: bool = setting(FLAG, shapes_results=False)


@dataclass
class FastMinimumNormConfig:
    """Fast Minimum-Norm L2, Pintor et al. 2021 (an upper bound on the distance to the boundary)."""

    _target_: str = MISSING
    steps: int = setting(whole(1, 100))
    alpha_init: float = setting(positive(1.0))                  # α₀, the initial step length
    alpha_final: Optional[float] = setting(optional(positive(0.01), "for alpha_init / 100", "null"))
    gamma_init: float = setting(probability(0.05))              # γ₀: ε changes by a factor 1 ± γ per step
    gamma_final: float = setting(probability(0.001))
    refine_steps: int = setting(whole(0, 10), 10)


@dataclass
class SmoothingConfig:
    """Randomized smoothing's certified radius (a lower bound, of the smoothed classifier)."""

    _target_: str = MISSING
    sigma: float = setting(positive(0.125))
    n0: int = setting(whole(1, 100))
    n: int = setting(whole(1, 100000))
    alpha: float = setting(probability(0.001))
    forward_batch: Optional[int] = setting(optional(whole(1, 1000), "to measure the fastest", "null"),
                                           shapes_results=False)   # radii do not depend on it
    noise_chunk: int = setting(whole(1, 500))
    seed: int = setting(whole(0, 0))
    compile: bool = setting(FLAG)


@dataclass
class ExactConfig:
    """The closed-form distance of an affine model."""

    _target_: str = MISSING
    rtol: float = setting(positive(0.0001))


# ---------------------------------------------------------------- training: trainer, optim, scheduler, module, ...


@dataclass
class TrainerConfig:
    """Lightning's Trainer: the arguments conf/trainer sets (add others with ``+trainer.<name>=…``)."""

    _target_: str = MISSING
    max_epochs: int = setting(whole(1, 5))
    accelerator: str = MISSING
    devices: Any = MISSING            # a count, a list of devices or auto
    precision: str = MISSING          # Lightning's names: 32-true, bf16-mixed, …
    deterministic: bool = setting(FLAG)
    log_every_n_steps: int = setting(whole(1, 10))
    enable_model_summary: bool = setting(FLAG)
    default_root_dir: str = elsewhere()
    enable_progress_bar: bool = setting(FLAG, True, shapes_results=False)
    strategy: str = "auto"            # ddp: trainer=ddp


@dataclass
class SGDConfig(PartialConfig):
    """torch.optim.SGD, given the network's parameters by the module."""

    lr: float = setting(positive(0.05))
    momentum: float = setting(fraction(0.9))
    weight_decay: float = setting(at_least_zero(0))
    nesterov: bool = setting(FLAG)


@dataclass
class CosineConfig(PartialConfig):
    """A cosine learning-rate schedule, given the optimizer by the module."""

    T_max: int = setting(whole(1, 5))   # epochs


@dataclass
class RegularizerConfig(PartialConfig):
    """The robustness-bias regularizer (the paper's Appendix B), completed with the dataset's partition."""

    alpha: float = setting(at_least_zero(1.0))
    tau: float = setting(at_least_zero(2.0))
    temperature: float = setting(positive(0.1))
    attribute: str = MISSING
    group: Optional[str] = MISSING


@dataclass
class ModuleConfig(PartialConfig):
    """The LightningModule; the pipeline hands it the network, the optimizer, the schedule and the regularizer."""

    channels_last: bool = setting(FLAG)
    compile: bool = setting(FLAG)


@dataclass
class EpochCheckpointConfig:
    _target_: str = MISSING
    path: str = MISSING


@dataclass
class CallbacksConfig:
    """Lightning callbacks before the audit's (the pipeline adds that one last)."""

    epoch_checkpoint: EpochCheckpointConfig = MISSING


@dataclass
class PathsConfig:
    output_dir: str = MISSING
    data_dir: str = MISSING


SCHEMAS = {
    "config": JobConfig,
    "dataset/digits": DigitsData, "dataset/synthetic": SyntheticData, "dataset/cifar": CifarData,
    "dataset/utkface": UTKFaceData, "dataset/adience": AdienceData, "dataset/image_folder": ImageFolderData,
    "model/network": ModelConfig, "model/torchvision": TorchvisionModel, "model/small_cnn": SmallCNN,
    "model/pyramidnet": PyramidNet, "imagenet": ImageNetConfig,
    "estimator/deepfool": DeepFoolConfig, "estimator/cw": CarliniWagnerConfig, "estimator/rs": SmoothingConfig,
    "estimator/exact": ExactConfig, "estimator/fmn": FastMinimumNormConfig,
    "trainer": TrainerConfig, "optim/sgd": SGDConfig, "scheduler/cosine": CosineConfig,
    "regularizer": RegularizerConfig, "module": ModuleConfig, "callbacks": CallbacksConfig, "paths": PathsConfig,
}


def register_schemas() -> None:
    """Each schema as ``schema/<name>`` in Hydra's ConfigStore, where conf/'s defaults lists find them."""
    store = ConfigStore.instance()
    for name, schema in SCHEMAS.items():
        group, _, leaf = f"schema/{name}".rpartition("/")
        store.store(group=group, name=leaf, node=schema)



# ---------------------------------------------------------------- checking a job's config


def checked(cfg: DictConfig) -> DictConfig:
    """The job's config with every rule checked (:class:`ConfigError` names the first broken one), less the
    settings of estimators it does not run.

    An experiment may set parameters of estimators that a command line then deselects
    (``estimator=[deepfool] experiment=utk_quick``): those come without a ``_target_`` and are dropped.
    """
    cfg = without_unselected_estimators(cfg)
    for node, key in added_keys(cfg):
        if not takes_keyword(node.get("_target_"), key.rpartition(".")[2]):
            raise ConfigError(unknown_setting(node, key, added_override(node, key)))
    try:
        job = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as error:
        raise ConfigError(setting_problem(error)) from None
    check_rules(job, "")
    return cfg


def without_unselected_estimators(cfg: DictConfig) -> DictConfig:
    unselected = [name for name, spec in cfg.estimator.items() if not (OmegaConf.is_dict(spec) and "_target_" in spec)]
    if not unselected:
        return cfg
    log.info("settings of estimator(s) %s ignored: this job does not run them", ", ".join(unselected))
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        for name in unselected:
            del cfg.estimator[name]
    return cfg


def added_keys(node: DictConfig, key: str = "") -> Iterator[tuple[DictConfig, str]]:
    """(node, full key) of each key that ``+`` or ``++`` added where the node's schema declares none.

    Hydra refuses such a key without ``+``, but with it OmegaConf takes it silently: ``+audit.plann.x=1``
    (a typo) was ignored and the job ran without the setting meant, ``+dataset.image_size=-3`` on the
    digits reached the data module's constructor as a traceback. Hydra's own keys (``_target_``, …) pass.
    """
    schema = OmegaConf.get_type(node)
    declared = {spec.name for spec in fields(schema)} if is_dataclass(schema) else None
    for name in node.keys():
        path = f"{key}.{name}" if key else str(name)
        if declared is not None and name not in declared and not str(name).startswith("_"):
            yield node, path
            continue
        child = node._get_node(name)
        if isinstance(child, DictConfig) and not (child._is_missing() or child._is_none() or child._is_interpolation()):
            yield from added_keys(child, path)


def added_override(node: DictConfig, key: str) -> str:
    """The added key as a command line gives it (``audit.plann.x=1``): down to its first plain value."""
    child = node._get_node(key.rpartition(".")[2])
    value = OmegaConf.to_container(child, resolve=False) if OmegaConf.is_config(child) else child._value()
    while isinstance(value, dict) and value:
        name, value = next(iter(value.items()))
        key = f"{key}.{name}"
    return f"{key}={shown(value)}"


def takes_keyword(target: str | None, name: str) -> bool:
    """Whether the callable a node instantiates (its ``_target_``) takes the keyword ``name``: a Lightning
    Trainer argument that conf/trainer does not set (``+trainer.gradient_clip_val=5``) is what ``+`` is for.
    A class's ``**kwargs`` are followed into its bases (the data modules pass theirs on); a function that
    takes ``**kwargs`` takes anything, as far as one can tell."""
    if not target:
        return False
    from hydra.utils import get_object

    try:
        found = get_object(str(target))
    except Exception:   # an unknown target is refused when the job instantiates it, in Hydra's words
        return False
    calls = [c.__init__ for c in found.__mro__ if "__init__" in vars(c) and c is not object] \
        if isinstance(found, type) else [found]
    for call in calls:
        parameters = inspect.signature(call).parameters
        if name in parameters and parameters[name].kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                            inspect.Parameter.KEYWORD_ONLY):
            return True
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            return False
    return bool(calls)   # every one passes **kwargs on: no telling what the last one takes


def unknown_setting(node: DictConfig, key: str, override: str) -> str:
    """One line for ``override`` (``key=value`` as typed, without ``+``), whose ``key`` the schema of ``node``
    does not declare: the settings it has, and a fix that works. Hydra's own line suggested adding the key
    with ``+``, which then passed a typo unseen or failed in a constructor; ``+`` is suggested only where
    the node's target takes the key, a setting only where the key is a typo of it."""
    parent, _, name = key.rpartition(".")
    schema = OmegaConf.get_type(node)
    known = [spec.name for spec in fields(schema) if not spec.name.startswith("_")]
    target = node.get("_target_")
    line = f"{override}: {parent or 'the config'} has no setting {name} ({schema.__name__}'s: {', '.join(known)}"
    if takes_keyword(target, name):
        return f"{line}), but {target} takes it. Fix: pass +{override}"
    line += f"; nor does {target} take it)" if target else ")"
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)   # a typo; image_size is no batch_size (0.6)
    meant = f"{parent}.{close[0]}" if close and parent else (close[0] if close else None)
    if meant and override.startswith(f"{key}="):
        return f"{line}. Fix: pass {meant}{override[len(key):]}"
    if meant:
        return f"{line}. Fix: spell it {meant}, or leave {key} out"
    return f"{line}. Fix: leave {key} out"


def check_rules(node, key: str) -> None:
    """Depth first: each field against its rule, then the dataclass's own ``check`` of how fields relate."""
    if is_dataclass(node):
        for spec in fields(node):
            value, path = getattr(node, spec.name), f"{key}.{spec.name}" if key else spec.name
            if spec.metadata.get("rule") is not None:
                spec.metadata["rule"].check(path, value)
            check_rules(value, path)
        if hasattr(node, "check"):
            node.check(key)
    elif isinstance(node, dict):
        for name, value in node.items():
            check_rules(value, f"{key}.{name}" if key else str(name))


def job_fingerprint(cfg: DictConfig) -> str:
    """The fingerprint a job's records, chunks and checkpoints carry: of :func:`results_settings`."""
    return settings_hash(results_settings(cfg))


def results_settings(cfg: DictConfig) -> dict:
    """The settings that shape a job's results, as plain data: every key but those the schema marks
    ``shapes_results=False`` (keys a command line adds with ``+`` count), of the selected estimators
    and their plans only."""
    settings = shaping(without_unselected_estimators(cfg))
    plans = settings["audit"]["plan"]
    for name in [name for name in plans if name not in settings["estimator"]]:
        del plans[name]
    return settings


def shaping_no_result(schema) -> set[str]:
    """The fields of a schema (a dataclass; None: none) that change only how fast or where a job runs."""
    return {spec.name for spec in fields(schema) if not spec.metadata.get("shapes_results", True)} \
        if is_dataclass(schema) else set()


def shaping(node):
    """``node`` as plain data, interpolations resolved, less the fields its schema marks as shaping no result."""
    if OmegaConf.is_dict(node):
        left_out = shaping_no_result(OmegaConf.get_type(node))
        return {str(key): shaping(node[key]) for key in node if key not in left_out}
    if OmegaConf.is_list(node):
        return [shaping(value) for value in node]
    return node


# ---------------------------------------------------------------- errors of composition, in one line


def composition_problem(error: Exception) -> str:
    """One line for an error Hydra raised while composing the config: an unknown option, with the
    options there are; a value of the wrong type, with its rule; anything else in Hydra's words."""
    if isinstance(error, MissingConfigException) and error.missing_cfg_file:
        return unknown_option(error)
    cause = error.__cause__
    while cause is not None and not isinstance(cause, OmegaConfBaseException):
        cause = cause.__cause__
    if cause is not None and hasattr(cause, "value") and rule_of(cause.object_type, cause.key):
        return setting_problem(cause)
    typed = re.search(r"To append to your config use \+(\S+)$", str(error))
    if typed and isinstance(getattr(cause, "parent_node", None), DictConfig) and \
            is_dataclass(OmegaConf.get_type(cause.parent_node)):
        return unknown_setting(cause.parent_node, cause.full_key, typed.group(1))
    reason = f" ({str(cause.msg).splitlines()[0]})" if cause is not None and cause.msg else ""
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip()) + reason


def unknown_option(error: MissingConfigException) -> str:
    """Hydra lists the options of a group for ``model=nope``, but not for a list (``estimator=[nope]``)."""
    group, _, name = error.missing_cfg_file.rpartition("/")
    options = error.options or sorted(path.stem for path in (CONFIG_DIR / group).glob("*.yaml"))
    return f"'{name}' is not an option of {group}. Available options in '{group}': {', '.join(options)}"


def setting_problem(error: OmegaConfBaseException) -> str:
    """One line for OmegaConf's complaint about one setting: its rule where the schema has one."""
    rule = rule_of(error.object_type, error.key)
    if rule is not None and hasattr(error, "value"):
        return rule.broken_by(error.full_key, error.value)
    reason = str(error.msg).splitlines()[0] if error.msg else type(error).__name__
    return f"{error.full_key}: {reason}"


def rule_of(schema, name) -> Rule | None:
    if not (isinstance(schema, type) and is_dataclass(schema)):
        return None
    return next((spec.metadata.get("rule") for spec in fields(schema) if spec.name == name), None)


def experiment_as_choice(overrides: list[str]) -> list[str]:
    """``+experiment=NAME`` as ``experiment=NAME``, which means the same here.

    ``experiment`` has a place (null) in the defaults list, so Hydra takes a choice for it but refuses
    an addition ("Multiple values for experiment"); Hydra's own parser finds the override.
    """
    parser = OverridesParser.create()

    def as_choice(argument: str) -> str:
        try:
            override = parser.parse_override(argument)
        except HydraException:
            return argument   # a flag such as --multirun; Hydra reports malformed overrides itself
        return argument[1:] if override.is_add() and override.key_or_group == "experiment" else argument

    return [as_choice(argument) for argument in overrides]


register_schemas()
