"""``robustness_bias.audit(model, X, y, sensitive_features=...)``: the audit for notebooks and scripts.

Any ``nn.Module`` on any images in [0,1], with group memberships given as fairlearn takes them. The
command line's own parts do the work: the engine measures (auditing/engine.py), the auditor adds the
fingerprints and writes the records (auditing/auditor.py), the publisher summarizes and draws them
(report/publish.py). So the records, summaries and figures are the command line's, column for
column, and an audit given a ``folder`` resumes by chunk as a command-line job does. No Lightning and
no Hydra here: importing this costs what the engine and the figures cost.
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import logging
import tempfile
from collections.abc import Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .analysis.aft import aft_ratios
from .analysis.summary import OVERALL, SIGNIFICANCE, audited_accuracy, sigmas_of, summary_settings
from .auditing import AUDIT_TAGS, Auditor, EstimatorPlan, Samples
from .auditing.logits import PROBE, check_logits, margin_readers
from .estimators import (CarliniWagner, DeepFool, Estimator, EstimatorMismatch, ExactLinear, FastMinimumNorm,
                         RandomizedSmoothing)
from .models.common import Normalize
from .records import (audit_folder, read_chunk_counts, read_records,
                      read_summary, settings_hash, weights_hash, write_chunk_counts, write_json, write_records,
                      write_summary)
from .report.publish import Publisher
from . import config

log = logging.getLogger(__name__)

# The estimators by the command line's names, each at its class's defaults: the paper's settings but
# CW's converged budget, as conf/estimator/*.yaml gives them (ESTIMATORS: the default four; NAMED: these and those run only when
# named); and the command line's plans where they differ from EstimatorPlan's defaults (conf/config.yaml,
# audit.plan). tests/test_api.py holds both to the config.
ESTIMATORS = {"exact": ExactLinear, "deepfool": DeepFool, "cw": CarliniWagner, "rs": RandomizedSmoothing}
NAMED = {**ESTIMATORS, "fmn": FastMinimumNorm}
SCHEMAS = {ExactLinear: config.ExactConfig, DeepFool: config.DeepFoolConfig, CarliniWagner: config.CarliniWagnerConfig,
           RandomizedSmoothing: config.SmoothingConfig,
           FastMinimumNorm: config.FastMinimumNormConfig}   # their parameters' types, ranges and fingerprint roles
PLANS = {"deepfool": {"chunk_size": 1024}, "cw": {"chunk_size": 1024}, "rs": {"every_nth": 5, "batch_size": 16, "chunk_size": 32},
         "fmn": {"chunk_size": 1024}}
TAG = "final"   # an audit of given weights is written as mode=audit writes it

# Record columns a sensitive feature may not be named after.
RESERVED = {"sample_index", "label", "class", "prediction", "correct", "estimator", "epoch", "epoch_tag", "precision",
            "distance", "bound", "cap", "success", "queries", "failure", "settings_hash", "weights_hash", "shard"}

# The by-group table's metrics (summary columns); those defined for the whole test set as well; those
# difference() compares.
METRICS = ("size", "accuracy", "attacked", "failures", "failure_share", "capped", "cap_share", "median_distance", "auc",
           "sigma", "sigma_low", "sigma_high", "p_adjusted", "sigma_least", "sigma_most", "flag")
# With adjust_for: σ adjusted for those features, beside σ
ADJUSTED_METRICS = ("adjusted_sigma", "adjusted_sigma_low", "adjusted_sigma_high", "adjusted_p_adjusted", "incomparable")
OVERALL_METRICS = ("size", "accuracy", "attacked", "failures", "failure_share", "capped", "cap_share", "median_distance",
                   "auc")
COMPARED = ("accuracy", "median_distance", "auc", "sigma")
RATIOS = ("accuracy", "median_distance", "auc")   # non-negative: a ratio of two groups' values means something


def audit(model: nn.Module, X, y=None, *, sensitive_features=None, estimators=None, normalization=None,
          device=None, every_nth: int | Mapping[str, int] | None = None, conditional: bool = True,
          failures: str = "censor", tau_max="pooled_max", rb_quantiles: Sequence[float] = (0.25, 0.5, 0.75),
          min_group_size: int = 5, significance: Mapping | None = None, class_names: Sequence[str] | None = None,
          sample_index=None, folder: str | Path | None = None, progress: bool = True, best: bool = False,
          adjust_for: Sequence[str] = ()) -> AuditResult:
    """Audit ``model`` for robustness bias on the images ``X``: how far each correctly classified image
    lies from the decision boundary, and σ(P), RB(P, τ) per group.

    ``X``: a float tensor (N, C, H, W) in [0,1] pixel space with ``y`` its labels, or a ``Dataset``
    (or a ``DataLoader`` of one, read in the dataset's own order) whose items start with (image, label).
    ``sensitive_features``: a DataFrame (one partition per column, their intersection too when there
    are several), a dict of arrays or one array, a group per image; the class is always a partition.
    ``estimators``: names among exact, deepfool, cw, rs (as the command line's defaults) and fmn, configured
    :class:`~robustness_bias.estimators.Estimator` objects, :class:`~robustness_bias.auditing.EstimatorPlan`
    objects, or a dict name → any of these; by default all four, less those that cannot measure the
    model (exact needs an affine one). ``normalization``: ``{"mean": ..., "std": ...}`` (or a
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
    device = _device(device)
    _check_precision(model)
    source = _Source.of(X, y)
    index = _sample_index(sample_index, len(source))
    groups = _groups(sensitive_features, len(source))
    normalize = _normalization(normalization)
    options = _summary_options(conditional, failures, tau_max, rb_quantiles, min_group_size, significance,
                               adjust_for, ["class", *groups])
    chosen = list(groups) or ["class"]
    settings = summary_settings(options, ["class", *groups], chosen)
    with _prepared(model, normalize, device) as audited:
        plan = _plan(estimators, every_nth, audited)
        names = _class_names(audited, source, class_names, margin_readers(plan))
        data = _AuditedImages(source, index, names, groups)
        fingerprint = settings_hash({"api": data.fingerprint(), "estimators": _plan_settings(plan),
                                     "summary": settings, **({"best": True} if best else {})})
        with ExitStack() as stack:
            out = Path(folder) if folder is not None else \
                Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="robustness_bias-")))
            publisher = Publisher(out / "figures" if folder is not None else None, "×".join(chosen), settings,
                                  in_training=False)
            auditor = Auditor(plan, Samples(data, index), out, partition=chosen, settings_hash=fingerprint,
                              progress=progress, publish=publisher, best=best, in_training=False)
            written = audit_folder(out, TAG)
            if folder is not None and _finished(auditor, written, weights_hash(audited)):
                log.info("%s already holds this audit: read back", written)
            else:
                auditor(audited, 0, [TAG])
            result = AuditResult(read_records(written), read_summary(written), settings, auditor.partition_name,
                                 list(groups), read_chunk_counts(written), type(model).__name__)
    if folder is not None:
        result.write_result(Path(folder))
    return result


class AuditResult:
    """What :func:`audit` found, as the command line writes it: ``records`` (records.parquet's rows),
    ``summary`` (summary.parquet's), and fairlearn-style views of the summary for the audited
    partition (the sensitive features' intersection when there are several, the one feature, or the
    class): :attr:`by_group`, :attr:`overall`, :meth:`group_min`, :meth:`group_max`, :meth:`difference` and
    :meth:`ratio`, with fairlearn's MetricFrame's names and conventions. A notebook shows it as a table.
    """

    def __init__(self, records: pd.DataFrame, summary: pd.DataFrame, settings: dict, partition: str,
                 features: list[str], chunks: tuple[str, dict] | None = None, model_name: str = "model"):
        self.records, self.summary, self.settings = records, summary, settings
        self.partition, self.sensitive_features = partition, features
        self.chunks, self.model_name = chunks, model_name

    @property
    def by_group(self) -> pd.DataFrame:
        """One row per group of the audited partition (a MultiIndex, one level per sensitive feature,
        for their intersection); columns (metric, estimator): ``by_group["sigma"]`` is σ(P) per group
        and estimator, σ < 0 meaning the group is less robust than the rest; with ``adjust_for``, also
        ``adjusted_sigma`` and its interval, adjusted p-value and the strata left out (``incomparable``)."""
        return self.by_partition(self.partition)

    @property
    def overall(self) -> pd.Series:
        """The whole audited set's values of the metrics it has (σ compares a group with the rest, so
        the whole has none), indexed (metric, estimator) like :attr:`by_group`'s columns."""
        rows = self._rows(self.partition)
        whole = rows[rows["group"] == OVERALL].set_index("estimator")[list(OVERALL_METRICS)].astype(object)
        return whole.T.stack().rename_axis(["metric", "estimator"]).rename("overall")   # counts stay whole numbers

    def group_min(self) -> pd.Series:
        """Per (metric, estimator): the smallest value over the groups (those without one left out); for σ,
        the least robust group's."""
        return self.by_group[list(COMPARED)].min()

    def group_max(self) -> pd.Series:
        """Per (metric, estimator): the largest value over the groups."""
        return self.by_group[list(COMPARED)].max()

    def difference(self, method: str = "between_groups") -> pd.Series:
        """Per (metric, estimator): the largest gap between two groups (``between_groups``), or between a
        group and the whole (``to_overall``, for the metrics the whole has), as fairlearn's MetricFrame
        gives it; groups without a value (too small for σ) are left out."""
        table = self.by_group[list(COMPARED)]
        if method == "between_groups":
            return table.max() - table.min()
        if method == "to_overall":
            overall = self.overall
            table = table[[m for m in COMPARED if m in OVERALL_METRICS]]
            return (table - overall.reindex(table.columns)).abs().max()
        raise ValueError(f"method={method!r}: use 'between_groups' or 'to_overall'")

    def ratio(self, method: str = "between_groups") -> pd.Series:
        """Per (metric, estimator): the smallest group's value over the largest (``between_groups``), or the
        smallest of each group's ratio to the whole and its inverse (``to_overall``), as fairlearn gives it;
        1 is parity. Only for the metrics that cannot be negative (accuracy, median distance, AUC): σ is a
        signed difference already, for which :meth:`difference` is the measure."""
        table = self.by_group[list(RATIOS)]
        if method == "between_groups":
            return table.min() / table.max()
        if method == "to_overall":
            overall = self.overall.reindex(table.columns).astype(float)
            ratios = table / overall
            return np.minimum(ratios, 1 / ratios).min()
        raise ValueError(f"method={method!r}: use 'between_groups' or 'to_overall'")

    def by_partition(self, partition: str) -> pd.DataFrame:
        """:attr:`by_group` for any partition of the summary (``class``, a sensitive feature, their
        intersection)."""
        rows = self._rows(partition)
        groups = rows[rows["group"] != OVERALL]
        estimators, names = pd.unique(groups["estimator"]), pd.unique(groups["group"])
        metrics = [*METRICS, *(m for m in ADJUSTED_METRICS if m in groups and groups[m].notna().any())]
        table = pd.concat({metric: groups.pivot(index="group", columns="estimator", values=metric)
                          .reindex(index=names, columns=estimators) for metric in metrics}, axis=1)
        table.columns.names = ["metric", "estimator"]
        features = partition.split("×")
        split = [str(group).split("×") for group in table.index]
        if len(features) > 1 and all(len(parts) == len(features) for parts in split):
            table.index = pd.MultiIndex.from_tuples([tuple(parts) for parts in split], names=features)
        else:
            table.index.name = partition
        return table

    def _rows(self, partition: str) -> pd.DataFrame:
        rows = self.summary[self.summary["partition"] == partition]
        if rows.empty:
            raise KeyError(f"no partition {partition!r} in the summary: it has {list(pd.unique(self.summary['partition']))}")
        return rows

    def aft(self, adjust_for: Sequence[str] | None = None, *, partitions: Sequence[str] | None = None,
            level: float = 0.95, min_group_size: int = 5, model: str = "weibull") -> pd.DataFrame:
        """Each group's distance ratio to the rest from an accelerated failure time fit on the records, adjusted
        for the attributes ``adjust_for`` (by default those the audit was given as ``adjust_for``; none: the
        unadjusted ratio), with its interval at ``level``: the report's ``aft.md``, one row per estimator ×
        partition × group (every partition of the summary unless ``partitions`` names some). A ratio below 1:
        closer to the boundary than the rest, within the adjusting attributes' strata; failures and capped
        distances enter censored; a group without a ratio says why (docs/design.md, "A model view: AFT ratios")."""
        if adjust_for is None:   # the audit's own (summary settings without the key: written before it existed)
            adjust_for = self.settings.get("adjust_for") or ()
        chosen = list(self.settings["partitions"]) if partitions is None else list(partitions)
        return aft_ratios(self.records, chosen, adjust_for, level=level, min_group_size=min_group_size, model=model)

    def survival_figure(self, path: str | Path | None = None):
        """Survival curves Î_P(τ) by the audited partition, one panel per estimator: the command line's
        ``figures/final_survival_<partition>.png``. Saved at ``path`` (returned), or without one a
        matplotlib Figure (a notebook shows it inline)."""
        return self._publisher(None).survival(self.records, TAG, None if path is None else Path(path))

    def sigma_figure(self, path: str | Path | None = None):
        """σ(P) per group of every partition: the command line's ``figures/final_sigma.png``. Saved at
        ``path`` (returned), or without one a matplotlib Figure (a notebook shows it inline)."""
        return self._publisher(None).sigma(self.summary, TAG, None if path is None else Path(path))

    def save(self, folder: str | Path, *, dataset: str = "data", model: str | None = None) -> Path:
        """Write the command line's files into ``folder``: ``audits/final/`` (records, summary, chunk
        counts), ``figures/`` and ``result.json`` (``dataset`` and ``model`` name the job there), so
        ``python -m robustness_bias.report`` reads it as a job; returns the folder."""
        folder = Path(folder)
        written = audit_folder(folder, TAG)
        write_records(written, self.records)
        if self.chunks is not None:
            write_chunk_counts(written, *self.chunks)
        write_summary(written, self.summary)
        self._publisher(folder / "figures").draw(self.records, self.summary, TAG)
        self.write_result(folder, dataset=dataset, model=model)
        return folder

    def write_result(self, folder: Path, *, dataset: str = "data", model: str | None = None) -> Path:
        """``result.json`` with the keys a command-line job's has (mode ``api``)."""
        return write_json(folder / "result.json", {
            "dataset": dataset, "model": model or self.model_name, "mode": "api",
            "settings_hash": str(self.records["settings_hash"].iloc[0]),
            "test_accuracy": audited_accuracy(self.records), "training_precision": None, "regularizer": None,
            "output_dir": str(folder), "bad_files": [], "audits": {TAG: str(audit_folder(folder, TAG))},
            "audit_chunks": dict([self.chunks]) if self.chunks else {}, "partition": self.partition,
            "summary_settings": self.settings, "shard": None, "sigma": sigmas_of(self.summary, self.partition)})

    def _publisher(self, figures: Path | None) -> Publisher:
        return Publisher(figures, self.partition, self.settings, in_training=False)

    def _headline(self) -> str:
        estimators = ", ".join(map(str, pd.unique(self.records["estimator"])))
        samples = self.records["sample_index"].nunique()
        return (f"AuditResult: {samples} images, estimators {estimators}, accuracy {audited_accuracy(self.records):.3f}; "
                f"σ(P) by {self.partition}")

    def __repr__(self) -> str:
        return f"{self._headline()}:\n{self.by_group['sigma'].round(4)}"

    def _repr_html_(self) -> str:
        """A notebook's view: σ per group and estimator with its interval, failures and BH-adjusted p."""
        table = self.by_group[["sigma", "sigma_low", "sigma_high", "p_adjusted", "attacked", "failures"]]
        shapes = {"p_adjusted": "{:.3f}", "attacked": "{:.0f}", "failures": "{:.0f}"}
        formats = {column: (lambda v, shape=shapes.get(column[0], "{:+.3f}"): "–" if pd.isna(v) else shape.format(v))
                   for column in table.columns}
        return f"<p>{html.escape(self._headline())}</p>" + table.to_html(formatters=formats)


class _Source:
    """The user's images, read one at a time: a tensor with its labels, or a dataset of (image, label)."""

    def __init__(self, images, labels: np.ndarray, digest: str):
        self.images, self.labels, self.digest = images, labels, digest

    @classmethod
    def of(cls, X, y) -> _Source:
        if isinstance(X, DataLoader):
            X = X.dataset
        if isinstance(X, Dataset) and not isinstance(X, torch.Tensor):
            if y is not None:
                raise ValueError("y is given and X is a dataset: the dataset's items already hold the labels")
            return cls._scanned(X)
        if y is None:
            raise ValueError("X is a tensor of images: pass their labels as y")
        images = torch.as_tensor(X).float()
        labels = _labels(y, len(images))
        _check_pixels(images, "X")
        digest = hashlib.sha256(images.detach().cpu().contiguous().numpy().tobytes())
        return cls(images, labels, digest.hexdigest())

    @classmethod
    def _scanned(cls, dataset: Dataset) -> _Source:
        """Read every item once: the labels, the pixel range and a fingerprint of the images."""
        digest, labels = hashlib.sha256(), []
        for i in range(len(dataset)):
            image, label = _item(dataset, i)
            _check_pixels(image, f"image {i}")
            digest.update(image.cpu().contiguous().numpy().tobytes())
            labels.append(int(label))
        return cls(dataset, _labels(labels, len(labels)), digest.hexdigest())

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, position: int) -> torch.Tensor:
        if isinstance(self.images, torch.Tensor):
            return self.images[position]
        return _item(self.images, position)[0]


def _item(dataset: Dataset, i: int) -> tuple[torch.Tensor, object]:
    item = dataset[i]
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise ValueError(f"item {i} of the dataset is no (image, label, ...) pair")
    image = item[0]
    if not isinstance(image, (torch.Tensor, np.ndarray)):
        raise ValueError(f"item {i} of the dataset holds a {type(image).__name__}, not an image tensor. "
                         "Fix: give the dataset a transform to tensors in [0,1] (torchvision's ToTensor)")
    return torch.as_tensor(image).float(), item[1]


def _check_pixels(images: torch.Tensor, what: str) -> None:
    """Distances are measured in [0,1] pixel space: normalized or 0..255 images would give other numbers."""
    if images.numel() and (not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1):
        raise ValueError(f"{what} has pixels outside [0,1] (from {images.min().item():.3g} to "
                         f"{images.max().item():.3g}). Fix: pass images in [0,1] and the model's input "
                         "normalization as normalization={'mean': ..., 'std': ...}")


def _labels(y, n: int) -> np.ndarray:
    labels = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y)
    if labels.shape != (n,):
        raise ValueError(f"y has shape {labels.shape} for {n} images: give one label per image")
    if n and (labels.dtype.kind not in "iub" or labels.min() < 0):
        raise ValueError("y must hold class numbers 0, 1, … (integers ≥ 0)")
    return labels.astype(np.int64)


def _sample_index(sample_index, n: int) -> np.ndarray:
    if sample_index is None:
        return np.arange(n, dtype=np.int64)
    index = np.asarray(sample_index)
    if index.shape != (n,) or index.dtype.kind not in "iu" or (n and index.min() < 0) or len(np.unique(index)) != n:
        raise ValueError(f"sample_index must hold {n} distinct integers ≥ 0, one per image")
    return index.astype(np.int64)


def _groups(sensitive_features, n: int) -> dict[str, pd.Categorical]:
    """The sensitive features as fairlearn takes them (a DataFrame, a dict of arrays, one array or a
    named Series), each as a categorical of readable group names; the order of a categorical's own
    categories is kept, other values are sorted."""
    if sensitive_features is None:
        return {}
    if isinstance(sensitive_features, pd.DataFrame):
        columns = {str(name): sensitive_features[name] for name in sensitive_features.columns}
    elif isinstance(sensitive_features, Mapping):
        columns = {str(name): values for name, values in sensitive_features.items()}
    else:
        name = getattr(sensitive_features, "name", None)
        columns = {str(name) if name is not None else "sensitive_feature_0": sensitive_features}
    groups = {}
    for name, values in columns.items():
        if name in RESERVED or "×" in name:
            raise ValueError(f"sensitive feature {name!r}: the records already have a column of that name "
                             "(or it holds ×, which names intersections). Fix: rename it")
        values = values.cpu().numpy() if isinstance(values, torch.Tensor) else values
        column = pd.Series(values.to_numpy() if isinstance(values, pd.Series) else values, copy=False)
        if isinstance(values, pd.Series) and isinstance(values.dtype, pd.CategoricalDtype):
            column = column.astype(values.dtype)
        if column.shape != (n,):
            raise ValueError(f"sensitive feature {name!r} has {len(column)} values for {n} images")
        if column.isna().any():
            raise ValueError(f"sensitive feature {name!r} has a missing value at position "
                             f"{int(np.flatnonzero(column.isna())[0])}: give every image a group")
        categories = column.cat.categories if isinstance(column.dtype, pd.CategoricalDtype) else sorted(column.unique())
        names = [str(c) for c in categories]
        if len(set(names)) != len(names):
            raise ValueError(f"sensitive feature {name!r}: two groups read alike as text ({names})")
        codes = pd.Categorical(column, categories=categories).codes
        groups[name] = pd.Categorical.from_codes(codes, categories=names)
    return groups


def _normalization(normalization) -> tuple[list[float], list[float]] | None:
    if normalization is None:
        return None
    if isinstance(normalization, Mapping):
        mean, std = normalization["mean"], normalization["std"]
    elif hasattr(normalization, "mean") and hasattr(normalization, "std"):   # torchvision's Normalize
        mean, std = normalization.mean, normalization.std
    else:
        mean, std = normalization
    return np.atleast_1d(np.asarray(mean, dtype=float)).tolist(), np.atleast_1d(np.asarray(std, dtype=float)).tolist()


@contextmanager
def _prepared(model: nn.Module, normalize, device):
    """The model as audited: behind its input normalization, on ``device``; afterwards every module has
    its own training mode back and the model is where it was."""
    modes = [(module, module.training) for module in model.modules()]
    before = next((p.device for p in model.parameters()), None)
    audited = model
    if normalize is not None:
        layer = Normalize(*normalize)
        audited = nn.Sequential(layer.to(before) if before is not None else layer, model)
    if device is not None:
        audited.to(device)
    try:
        yield audited.eval()
    finally:
        if device is not None and before is not None:
            model.to(before)
        for module, training in modes:
            module.training = training


def _device(device) -> torch.device | None:
    """The device asked for, where torch can use it (``device="cuda"`` without a GPU gets the fix, not
    torch's traceback from deep inside the first forward pass)."""
    if device is None:
        return None
    try:
        chosen = torch.device(device)
        torch.empty(0, device=chosen)
    except (RuntimeError, AssertionError) as error:   # torch built without CUDA asserts
        reason = str(error).splitlines()[0].split(". ")[0]
        raise ValueError(f"device={device!r} cannot be used here ({reason}). Fix: device='cpu', or leave device "
                         "out to audit the model where it is") from None
    return chosen


def _check_precision(model: nn.Module) -> None:
    """The images reach the model in float32, in which the attacks measure: a float64 or half-precision
    model would fail at its first layer."""
    others = sorted({str(t.dtype).removeprefix("torch.") for t in (*model.parameters(), *model.buffers())
                     if t.is_floating_point()} - {"float32"})
    if others:
        raise ValueError(f"the model holds {' and '.join(others)} tensors, and the audit feeds it float32 images. "
                         "Fix: audit model.float()")


@torch.no_grad()
def _class_names(model: nn.Module, source: _Source, class_names, readers: list[str]) -> list[str]:
    """One name per output of the model (the records' ``class``): ``class_names`` or 0, 1, …; read off one
    forward pass on the first images, whose outputs must be logits for the estimators ``readers``
    (:func:`check_logits`)."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    outputs = 0
    if len(source):
        logits = _outputs(model, torch.stack([source.image(i) for i in range(min(PROBE, len(source)))]).to(device))
        check_logits(logits, readers)
        outputs = logits.shape[-1]
    names = [str(k) for k in range(outputs)] if class_names is None else [str(c) for c in class_names]
    if len(names) != outputs:
        raise ValueError(f"class_names has {len(names)} names but the model gives {outputs} outputs")
    if len(source) and source.labels.max() >= outputs:
        raise ValueError(f"a label is {source.labels.max()} but the model gives {outputs} outputs (classes 0..{outputs - 1})")
    return names


def _outputs(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The model's outputs on ``images``; images that the model takes only with their last axis moved first
    are named as laid out channels-last, (H, W, C), with the fix."""
    try:
        return model(images)
    except RuntimeError:
        if images.dim() != 4 or not _takes(model, images.permute(0, 3, 1, 2)):
            raise
    raise ValueError(f"the images are laid out channels-last, (H, W, C) = {tuple(images.shape[1:])}: the model "
                     "takes them only as (C, H, W). Fix: pass X.permute(0, 3, 1, 2) (a dataset: give it a transform "
                     "to (C, H, W) tensors, such as torchvision's ToTensor)")


def _takes(model: nn.Module, images: torch.Tensor) -> bool:
    try:
        model(images)
    except RuntimeError:
        return False
    return True


def _summary_options(conditional, failures, tau_max, rb_quantiles, min_group_size, significance, adjust_for,
                     attributes: list[str]) -> dict:
    """The summary's options, checked by the command line's rules (the schema of ``audit``)."""
    adjust_for = [adjust_for] if isinstance(adjust_for, str) else list(adjust_for)
    for key, value in (("failures", failures), ("tau_max", tau_max), ("rb_quantiles", list(rb_quantiles)),
                       ("min_group_size", min_group_size), ("adjust_for", adjust_for)):
        config.rule_of(config.AuditConfig, key).check(key, value)
    unknown = sorted(set(significance or {}) - set(SIGNIFICANCE))
    if unknown:
        raise ValueError(f"significance has unknown keys {unknown}: use {sorted(SIGNIFICANCE)}")
    missing = [a for a in adjust_for if a not in attributes]
    if missing:
        raise ValueError(f"adjust_for={adjust_for}: no sensitive feature {missing}. Fix: adjust for some of "
                         f"{attributes}, or pass {missing} in sensitive_features")
    return {"conditional": conditional, "failures": failures, "tau_max": tau_max, "rb_quantiles": list(rb_quantiles),
            "min_group_size": min_group_size, "significance": {**SIGNIFICANCE, **(significance or {})},
            "adjust_for": adjust_for}


def _plan(estimators, every_nth, model: nn.Module) -> dict[str, EstimatorPlan]:
    """The estimators as the engine takes them: by name at the command line's defaults and
    plan, or as given. Of the default four, those that cannot measure ``model`` are skipped (as with
    ``audit.skip_unfit_estimators``); one asked for by name is an error."""
    chosen = list(ESTIMATORS) if estimators is None else estimators
    if isinstance(chosen, (str, Estimator, EstimatorPlan)):
        chosen = [chosen]
    named = list(chosen.items()) if isinstance(chosen, Mapping) else [(_name(spec), spec) for spec in chosen]
    if len({name for name, _ in named}) != len(named):
        raise ValueError(f"estimators {[name for name, _ in named]}: each name once (pass a dict to name them)")
    plan = {}
    for name, spec in named:
        if isinstance(spec, str):
            if spec not in NAMED:
                raise ValueError(f"unknown estimator {spec!r}: use one of {list(NAMED)}, or an Estimator object")
            spec = NAMED[spec]()
        if isinstance(spec, Estimator):
            spec = EstimatorPlan(spec, **PLANS.get(name, {}))
        if not isinstance(spec, EstimatorPlan):
            raise TypeError(f"estimator {name!r} is a {type(spec).__name__}: give a name, an Estimator or an EstimatorPlan")
        nth = every_nth.get(name) if isinstance(every_nth, Mapping) else every_nth
        if nth is not None:
            config.rule_of(config.EstimatorPlan, "every_nth").check(
                f"every_nth[{name}]" if isinstance(every_nth, Mapping) else "every_nth", nth)
            spec = dataclasses.replace(spec, every_nth=nth)
        plan[name] = dataclasses.replace(spec, after=AUDIT_TAGS)   # one audit: every estimator measures in it
    unfit = {}
    for name, step in plan.items():
        try:
            step.estimator.check_model(model)
        except EstimatorMismatch as error:
            unfit[name] = error
    if unfit and (estimators is not None or len(unfit) == len(plan)):
        raise EstimatorMismatch(" ".join(str(error) for error in unfit.values()))
    if unfit:
        log.info("estimator(s) %s skipped: they cannot measure this model", sorted(unfit))
    return {name: step for name, step in plan.items() if name not in unfit}


def _name(spec) -> str:
    if isinstance(spec, str):
        return spec
    estimator = spec.estimator if isinstance(spec, EstimatorPlan) else spec
    return getattr(estimator, "name", type(estimator).__name__)


def _plan_settings(plan: dict[str, EstimatorPlan]) -> dict:
    """What of the plan shapes the records, for the fingerprint: each estimator's class and parameters and
    its plan, less what the command line's schema marks as shaping no result (an estimator of a class
    the schema does not know counts whole)."""
    settings = {}
    for name, step in plan.items():
        speed = config.shaping_no_result(SCHEMAS.get(type(step.estimator)))
        parameters = {key: value for key, value in vars(step.estimator).items()
                      if not key.startswith("_") and key not in speed
                      and isinstance(value, (bool, int, float, str, type(None)))}
        schedule = {key: value for key, value in dataclasses.asdict(step).items()
                    if key != "estimator" and key not in config.shaping_no_result(config.EstimatorPlan)}
        settings[name] = {"class": type(step.estimator).__qualname__, **parameters, "plan": schedule}
    return settings


class _AuditedImages(Dataset):
    """The images as the engine reads them: item ``sample_index`` is (image, label, group codes), and
    ``metadata`` gives the table an ImageTable gives (sample_index, label, class, one column per
    sensitive feature), so the records have the command line's columns."""

    def __init__(self, source: _Source, index: np.ndarray, class_names: list[str], groups: dict[str, pd.Categorical]):
        self.source, self.index, self.class_names, self.groups = source, pd.Index(index), class_names, groups
        codes = np.stack([groups[name].codes for name in groups], 1) if groups else np.zeros((len(index), 0))
        self.codes = torch.as_tensor(codes, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, sample: int):
        position = self.index.get_loc(sample)
        return self.source.image(position), int(self.source.labels[position]), self.codes[position]

    def metadata(self, indices) -> pd.DataFrame:
        positions = self.index.get_indexer(np.asarray(indices))
        labels = self.source.labels[positions]
        table = pd.DataFrame({"sample_index": np.asarray(indices, dtype=np.int64), "label": labels,
                              "class": pd.Categorical.from_codes(labels, categories=self.class_names)})
        for name, values in self.groups.items():
            table[name] = pd.Categorical.from_codes(values.codes[positions], categories=values.categories)
        return table

    def fingerprint(self) -> dict:
        """What of the data shapes the records: the images, labels, ids, class names and groups."""
        groups = {name: [list(values.categories), hashlib.sha256(values.codes.tobytes()).hexdigest()]
                  for name, values in self.groups.items()}
        return {"images": self.source.digest, "labels": hashlib.sha256(self.source.labels.tobytes()).hexdigest(),
                "sample_index": hashlib.sha256(self.index.to_numpy().tobytes()).hexdigest(),
                "classes": self.class_names, "groups": groups}


def _finished(auditor: Auditor, written: Path, weights: str) -> bool:
    """Whether ``written`` holds this very audit, published: the same settings and the same weights."""
    if not auditor.finished(TAG, 0):
        return False
    stored = pq.read_table(written / "records.parquet", columns=["weights_hash"]).column(0)
    return len(stored) > 0 and stored[0].as_py() == weights
