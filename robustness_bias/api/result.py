"""What :func:`robustness_bias.audit` returns: the records and summaries as the command line writes them, with
fairlearn-style views by group (MetricFrame's names and conventions), figures and the command line's files."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..analysis.aft import aft_ratios
from ..analysis.summary import OVERALL, audited_accuracy, sigmas_of
from ..records import audit_folder, intersection_parts, write_chunk_counts, write_json, write_records, write_summary
from ..report.publish import Publisher

TAG = "final"   # an audit of given weights is written as mode=audit writes it

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
        features = intersection_parts(partition)
        split = [intersection_parts(str(group)) for group in table.index]
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
