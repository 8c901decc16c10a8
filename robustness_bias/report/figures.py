"""Figures of one audit: survival curves Î_P(τ) per group, and σ(P) per group (PNG, seaborn)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullFormatter

from ..analysis import metrics
from ..analysis.summary import OVERALL, group_values
from ..records import write_atomic
from .answer import partition_label


class PictureFigure(Figure):
    """A Figure made without pyplot (no global state, no backend chosen for the user) that a notebook shows
    as a picture by itself: IPython displays an object's ``_repr_png_``, and registers one for plain Figures
    only under ``%matplotlib inline``."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        return buffer.getvalue()


def _panels(count: int, figsize: tuple[float, float]):
    """A figure of ``count`` panels in a row (a notebook shows the returned figure inline; a job writes it
    to a file)."""
    fig = PictureFigure(figsize=figsize)
    return fig, fig.subplots(1, count, squeeze=False)


def _save(fig, path: Path | None, also_pdf: bool):
    """Write the figure to ``path`` (and beside it as PDF: drawn once, saved twice); returns ``path``.
    Without a path, returns the figure itself for a notebook to show."""
    if path is None:
        return fig
    for target in (path, path.with_suffix(".pdf")) if also_pdf else (path,):
        suffix = target.suffix.lstrip(".")
        write_atomic(target, lambda tmp, s=suffix: fig.savefig(tmp, format=s, dpi=120, bbox_inches="tight"))
    return path


def survival_figure(records: pd.DataFrame, partition: str, path: str | Path | None, *, title: str = "",
                    conditional: bool = True, failures: str = "censor", tau_max="pooled_max",
                    also_pdf: bool = False, names: dict[str, str] | None = None):
    """One panel per estimator; one step curve Î_P(τ) per group of ``partition`` on [0, τ_max]. The legend
    counts each group's failed and capped points; ``+`` marks a curve whose failures are censored at τ_max
    and a dotted line the estimator's cap, as survival plots mark what is known only to lie beyond."""
    estimators = list(dict.fromkeys(records["estimator"]))
    fig, axes = _panels(len(estimators), (4.5 * len(estimators), 3.6))
    kw = dict(conditional=conditional, failures=failures)
    palette = sns.color_palette("colorblind")
    for ax, estimator in zip(axes[0], estimators):
        frame = records[records["estimator"] == estimator]
        distance, correct = frame["distance"].to_numpy(float), frame["correct"].to_numpy(bool)
        t_max = metrics.resolve_tau_max(tau_max, distance, correct, **kw)
        taus = np.linspace(0, t_max if np.isfinite(t_max) else 1.0, 400)
        groups = group_values(frame[partition])
        success = frame["success"].to_numpy(bool)
        cap = frame["cap"].to_numpy(float) if "cap" in frame else np.full(len(frame), np.inf)
        capped = correct & success & metrics.at_cap(distance, cap)
        for colour, group in zip(palette * (len(groups) // len(palette) + 1), groups):
            member = (frame[partition] == group).to_numpy()
            d = metrics.effective_distances(distance[member], correct[member], **kw)
            if d.size:
                unknown = [f"{count} {what}" for count, what in (((member & correct & ~success).sum(), "failed"),
                                                                 ((member & capped).sum(), "at cap")) if count]
                curve = metrics.survival(d, taus)
                ax.plot(taus, curve, drawstyle="steps-post", color=colour,
                        label=f"{group} (n={d.size}{''.join(', ' + u for u in unknown)})")
                if (member & correct & ~success).any() and failures == "censor":   # censored at τ_max, as KM marks them
                    ax.plot(taus[-1], curve[-1], marker="+", markersize=9, color=colour)
        if capped.any():
            ax.axvline(float(np.min(cap[capped])), color="grey", linestyle=":", linewidth=1)
            ax.text(float(np.min(cap[capped])), 1.0, " cap", color="grey", fontsize="x-small", va="top", ha="right")
        ax.set(title=estimator, xlabel="τ (pixel-space L2)", ylabel="Î_P(τ)", ylim=(-0.02, 1.02))
        ax.legend(fontsize="small", title=partition_label(partition, names))
    fig.suptitle(title or f"Survival curves by {partition_label(partition, names)}")
    return _save(fig, None if path is None else Path(path), also_pdf)


def sigma_figure(summary: pd.DataFrame, path: str | Path | None, *, title: str = "", also_pdf: bool = False,
                 names: dict[str, str] | None = None, min_group_size: int | None = None):
    """σ(P) per group with its bootstrap interval, one panel per partition, one bar colour per estimator
    (σ < 0: less robust). A group without σ gets no bar but its reason, written where the bar would be:
    how many of its points were correctly classified (the only ones attacked), too few for σ. A flagged
    σ (its failures or capped points pass a few percent) is hatched, with its band dotted."""
    groups = summary[summary["group"] != OVERALL]
    partitions = list(dict.fromkeys(groups["partition"]))
    estimators = list(dict.fromkeys(groups["estimator"].astype(str)))
    palette = sns.color_palette("colorblind", max(len(estimators), 1))
    fig, axes = _panels(len(partitions), (max(4.5, 0.6 * groups["group"].nunique()) * len(partitions), 3.6))
    width = 0.8 / max(len(estimators), 1)
    missing = flags = False
    adjusted_to = ""
    for ax, partition in zip(axes[0], partitions):
        mine = groups[groups["partition"] == partition].astype({"group": str, "estimator": str})
        order = list(dict.fromkeys(mine["group"]))
        for k, estimator in enumerate(estimators):
            rows = mine[mine["estimator"] == estimator].set_index("group").reindex(order)
            x = np.arange(len(order)) - 0.4 + width * (k + 0.5)
            sigma = rows["sigma"].to_numpy(float)
            shown = np.isfinite(sigma)
            flagged = shown & rows.get("flag", pd.Series("", index=rows.index)).fillna("").astype(bool).to_numpy()
            ax.bar(x[shown], sigma[shown], width, color=palette[k], label=estimator)
            if flagged.any():   # hatched, with the band σ spans wherever the failed and capped points lie
                ax.bar(x[flagged], sigma[flagged], width, fill=False, hatch="///", edgecolor="white", linewidth=0)
                least, most = rows["sigma_least"].to_numpy(float), rows["sigma_most"].to_numpy(float)
                ax.vlines(x[flagged], least[flagged], most[flagged], color=palette[k], linestyle=":", linewidth=1.2)
                flags = True
            low, high = rows["sigma_low"].to_numpy(float), rows["sigma_high"].to_numpy(float)
            ranged = shown & np.isfinite(low) & np.isfinite(high)
            # drawn from end to end: a studentized interval need not contain σ
            ax.vlines(x[ranged], low[ranged], high[ranged], color="black", linewidth=0.8)
            adjusted_to = draw_adjusted(ax, rows, x + width / 4) or adjusted_to
            for xi, row in zip(x[~shown], rows[~shown].itertuples()):
                if pd.isna(row.size):
                    continue   # the estimator did not audit this partition
                missing = True
                ax.text(xi, 0, f" no σ: {int(row.attacked)} of {int(row.size)} correct", rotation=90, ha="center",
                        va="bottom", fontsize="x-small", color=palette[k])
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(np.arange(len(order)), order, rotation=45, ha="right")
        label = partition_label(str(partition), names)
        ax.set(title=f"σ(P) by {label}", xlabel=label, ylabel="σ(P)")
        ax.legend(fontsize="small", title="estimator", loc="upper left", bbox_to_anchor=(1, 1))
    fig.suptitle(title or "Robustness bias σ(P)")
    note = "bars: σ with its bootstrap interval; σ < 0: closer to the boundary than the rest"
    if flags:
        note += ("\nhatched: σ rests on failed or capped points; dotted: σ with them at the least and the most "
                 "they could be")
    if adjusted_to:
        note += f"\n◇ dashed: σ adjusted for {adjusted_to} (the rest reweighted to each group's mix), with its interval"
    if missing:
        rule = f" (audit.min_group_size={min_group_size})" if min_group_size else ""
        note += f". no σ: too few correctly classified points{rule}"
    fig.text(0.5, -0.02, note, ha="center", va="top", fontsize="small")
    return _save(fig, None if path is None else Path(path), also_pdf)


def draw_adjusted(ax, rows: pd.DataFrame, x: np.ndarray) -> str:
    """σ adjusted for ``audit.adjust_for`` as an open diamond beside each bar, its interval dashed; returns the
    attributes it was adjusted for ('' where none was)."""
    if "adjusted_sigma" not in rows:
        return ""
    adjusted = rows["adjusted_sigma"].to_numpy(float)
    shown = np.isfinite(adjusted)
    low, high = rows["adjusted_sigma_low"].to_numpy(float), rows["adjusted_sigma_high"].to_numpy(float)
    ranged = shown & np.isfinite(low) & np.isfinite(high)
    ax.vlines(x[ranged], low[ranged], high[ranged], color="dimgray", linestyle="--", linewidth=0.8)
    ax.scatter(x[shown], adjusted[shown], marker="D", s=22, facecolor="white", edgecolor="black", zorder=3)
    return ", ".join(a for a in pd.unique(rows["adjusted_for"].fillna("")) if a) if shown.any() else ""


def sigma_heatmaps(sigma: pd.DataFrame, dataset: str, estimator: str, partition: str, path: str | Path, *,
                   also_pdf: bool = False, names: dict[str, str] | None = None) -> Path:
    """σ(P) of the groups of one partition as models × groups, "after epoch 1" beside "final", on a
    diverging colormap centred on 0."""
    frame = sigma[(sigma["dataset"] == dataset) & (sigma["estimator"] == estimator) & (sigma["partition"] == partition)]
    frame = frame.assign(column=frame["group"].astype(str))
    panels = [("first", "after epoch 1"), ("final", "final")]
    grids = [frame[frame["epoch_tag"] == tag].pivot_table(index="model", columns="column", values="sigma")
             for tag, _ in panels]
    p_values = [frame[frame["epoch_tag"] == tag].pivot_table(index="model", columns="column", values="p_adjusted",
                                                             dropna=False).reindex_like(g) for (tag, _), g in zip(panels, grids)]
    limit = max([float(np.nanmax(np.abs(g.to_numpy()))) for g in grids if g.size] + [1e-9])
    width = max(6.0, 0.55 * max((g.shape[1] for g in grids), default=1))
    fig, axes = _panels(2, (2 * width, 0.5 * max((g.shape[0] for g in grids), default=1) + 2.5))
    for ax, grid, p_value, (_, title) in zip(axes[0], grids, p_values, panels):
        if grid.empty:
            ax.set_axis_off()
            ax.set_title(f"{title}: no audit")
            continue
        labels = grid.map(lambda v: f"{v:.2f}") + (p_value < 0.05).map(lambda s: "*" if s else "")
        sns.heatmap(grid, ax=ax, cmap="RdBu", center=0, vmin=-limit, vmax=limit,
                    annot=labels.to_numpy() if grid.shape[1] <= 12 else False, fmt="", cbar_kws={"label": "σ(P)"})
        ax.set(title=title, xlabel=partition_label(partition, names), ylabel="model")
    fig.suptitle(f"{dataset}, {partition_label(partition, names)}: σ(P) by {estimator} (red: less robust than the rest; "
                 "*: BH-adjusted p < 0.05)")
    fig.text(0.5, -0.02, "blank: no σ (fewer correctly classified points in the group than audit.min_group_size)",
             ha="center", va="top", fontsize="small")
    return _save(fig, Path(path), also_pdf)


def distance_distributions(records: pd.DataFrame, partition: str, path: str | Path, *, title: str = "",
                           also_pdf: bool = False, names: dict[str, str] | None = None) -> Path:
    """Distances of the correctly classified points per group, one box per model, one panel per estimator."""
    solved = records[records["correct"] & records["success"] & np.isfinite(records["distance"])]
    estimators = list(dict.fromkeys(solved["estimator"].astype(str)))
    fig, axes = _panels(max(1, len(estimators)), (5 * max(1, len(estimators)), 3.8))
    for ax, estimator in zip(axes[0], estimators):
        mine = solved[solved["estimator"].astype(str) == estimator]
        mine = pd.DataFrame({"group": mine[partition].astype(str).to_numpy(), "model": mine["model"].astype(str).to_numpy(),
                             "distance": mine["distance"].to_numpy()})
        sns.boxplot(data=mine, x="group", y="distance", hue="model", ax=ax, palette="colorblind", fliersize=1,
                    order=sorted(mine["group"].unique()), hue_order=sorted(mine["model"].unique()))
        ax.set(title=estimator, xlabel=partition_label(partition, names), ylabel="L2 distance to the boundary")
        ax.tick_params(axis="x", rotation=45)
    fig.suptitle(title or f"Distances by {partition}")
    return _save(fig, Path(path), also_pdf)


def regularization_figure(rows: pd.DataFrame, path: str | Path, *, title: str = "", also_pdf: bool = False) -> Path:
    """σ of the target group against α, one line per τ, the original model as a dashed line."""
    estimators = [c.removeprefix("σ ") for c in rows.columns if c.startswith("σ ")]
    fig, axes = _panels(len(estimators) + 1, (4.2 * (len(estimators) + 1), 3.6))
    panels = [(f"σ {e}", f"original σ {e}", f"σ(target) by {e}") for e in estimators]
    panels.append(("accuracy %", "original accuracy %", "test accuracy %"))
    for ax, (value, original, label) in zip(axes[0], panels):
        for tau, line in rows.sort_values("alpha").groupby("tau"):
            ax.plot(line["alpha"], line[value], marker="o", label=f"τ = {tau:g}")
        if rows[original].notna().any():
            ax.axhline(rows[original].mean(), color="black", linestyle="--", label="original")
        ax.set(xscale="log", xlabel="α", ylabel=label, title=label)
        ax.legend(fontsize="small")
    fig.suptitle(title or "Regularized vs original")
    return _save(fig, Path(path), also_pdf)


def forest_figure(table: pd.DataFrame, dataset: str, partition: str, path: str | Path | None, *,
                  also_pdf: bool = False, names: dict[str, str] | None = None):
    """The AFT distance ratios of the groups of one partition (the report's aft table): one panel per
    estimator, one row per group and model (and seed), the ratio with its interval on a log axis and a line
    at 1 (ratio < 1: closer to the boundary than the rest). A row without a ratio says why."""
    rows = table[(table["dataset"] == dataset) & (table["partition"] == partition)]
    estimators = list(dict.fromkeys(rows["estimator"].astype(str))) or [""]
    labels = _forest_labels(rows)
    order = list(dict.fromkeys(labels))
    fig = PictureFigure(figsize=(4.5 * len(estimators) + 1.5, 1.4 + 0.3 * len(order)), layout="constrained")
    axes = fig.subplots(1, len(estimators), sharey=True, squeeze=False)[0]
    for ax, estimator in zip(axes, estimators):
        mine = rows["estimator"].astype(str).to_numpy() == estimator
        y = np.array([order.index(label) for label, keep in zip(labels, mine) if keep], dtype=float)
        ratio, low, high = (rows.loc[mine, column].to_numpy(float) for column in ("ratio", "ratio low", "ratio high"))
        shown = np.isfinite(ratio)
        ax.errorbar(ratio[shown], y[shown], xerr=[ratio[shown] - low[shown], high[shown] - ratio[shown]], fmt="o",
                    color="black", markersize=4, capsize=2, linewidth=1)
        ax.axvline(1, color="grey", linestyle="--", linewidth=1)
        _ratio_axis(ax, np.r_[low[shown], high[shown], 1.0])
        for yi, reason in zip(y[~shown], rows.loc[mine, "reason"].to_numpy()[~shown]):
            short = reason if len(reason) <= 60 else reason[:59] + "…"
            ax.text(0.02, yi, f"no ratio: {short}", transform=ax.get_yaxis_transform(), va="center",
                    fontsize="x-small", color="grey")
        ax.set(title=estimator, xlabel="distance ratio to the rest")
    axes[0].set_yticks(np.arange(len(order)), order, fontsize="small")
    axes[0].set_ylim(len(order) - 0.5, -0.5)
    adjusted = sorted(set(rows["adjusted for"].fillna("").astype(str)) - {""})
    fig.suptitle(f"{dataset}: distance ratio of each {partition_label(partition, names)} group to the rest (AFT, "
                 + (f"adjusted for {'; '.join(adjusted)})" if adjusted else "unadjusted)"))
    fig.supxlabel("log scale; < 1: closer to the decision boundary than the rest (less robust); bars: the "
                  "interval of the fit (Wald)", fontsize="small")
    return _save(fig, None if path is None else Path(path), also_pdf)


def _ratio_axis(ax, values: np.ndarray) -> None:
    """A log axis over ``values`` with ticks at round ratios, printed as plain numbers (0.5, 1, 2)."""
    values = values[np.isfinite(values) & (values > 0)]
    low, high = values.min() / 1.1, values.max() * 1.1
    ax.set_xscale("log")
    ax.set_xlim(low, high)
    ticks = [t for t in (0.1, 0.2, 0.25, 0.33, 0.5, 0.67, 0.8, 1, 1.25, 1.5, 2, 3, 4, 5, 10) if low <= t <= high]
    if len(ticks) >= 2:   # else matplotlib's own, for ratios beyond these
        ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _forest_labels(rows: pd.DataFrame) -> list[str]:
    """Per row: its group, model and seed, and its job's name where jobs of another experiment share those."""
    seeds = ["" if pd.isna(seed) else f" (seed {int(seed)})" for seed in rows["seed"]]
    labels = [f"{group} · {model}{seed}" for group, model, seed in zip(rows["group"], rows["model"], seeds)]
    jobs = rows["job"] if "job" in rows else pd.Series([""] * len(rows), index=rows.index)
    shared = pd.Series(jobs.to_numpy()).groupby(labels).transform("nunique").to_numpy() > 1
    return [f"{label} · {job}" if clash else label for label, job, clash in zip(labels, jobs, shared)]
