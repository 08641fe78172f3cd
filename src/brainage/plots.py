"""Figures: the youngest and oldest subject, per-subject QC and the TOF gallery, the split,
learning curves, predictions, error trends, MAE comparison, cross-validation folds and design
comparison, cost, attribution maps.

Figures are built with matplotlib's object-oriented :class:`~matplotlib.figure.Figure` API and
never touch pyplot, so no global state leaks between figures or into the workflow's processes.
Saving a bare Figure renders with Agg (or the PDF backend) whatever the session's backend is,
so no display is needed and the backend is not switched for the importer. Each function saves
through :func:`brainage.io.save_figure`, so the format follows the extension (``.png`` or
``.pdf``) and a killed job leaves no partial file.

Runs are laid out on a grid with one row per modality and one column per model, in the order
of the mapping (the config's order), so every figure puts a given run in the same place.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from skimage.feature import canny

from brainage import io, metrics
from brainage.metrics import RunKey
from brainage.qc import SubjectImages
from brainage.vocabulary import ANGIOGRAPHIC_CHANNELS, EVAL, MRA, RAW_SCANS, TRAIN

DPI = 150
IMAGE_DPI = 100  # figures of brain images: enough for thumbnails and mid-slices, pages stay light
PANEL_SIZE = (3.0, 2.6)  # inches per run panel: readable at a 4 × 3 grid on one page
EVAL_COLOR = "C0"
TRAIN_COLOR = "0.6"


def _run_grid(keys: Iterable[RunKey], share: bool) -> tuple[Figure, dict[RunKey, Axes]]:
    """A figure with one panel per run (modality rows × model columns); unused cells are hidden."""
    keys = list(keys)
    if not keys:
        raise ValueError("no runs to plot")
    modalities = list(dict.fromkeys(modality for modality, _ in keys))
    models = list(dict.fromkeys(model for _, model in keys))
    width, height = PANEL_SIZE
    fig = Figure(figsize=(width * len(models), height * len(modalities) + 0.6), layout="constrained")
    grid = fig.subplots(len(modalities), len(models), squeeze=False, sharex=share, sharey=share)
    panels = {}
    for row, modality in enumerate(modalities):
        for column, model in enumerate(models):
            ax = grid[row, column]
            if (modality, model) in keys:
                ax.set_title(f"{modality} · {model}", fontsize=9)
                panels[(modality, model)] = ax
            else:
                ax.set_axis_off()
    return fig, panels


def _shared_legend(fig: Figure, ax: Axes) -> None:
    """One legend below the grid, taken from a panel, instead of one per panel."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=8, frameon=False)


def _set(predictions: pd.DataFrame, name: str) -> pd.DataFrame:
    return predictions[predictions["set"] == name]


def plot_learning_curves(histories: Mapping[RunKey, pd.DataFrame], path: str | Path) -> None:
    """Train, tune and eval MAE per epoch for every run, best tune epoch marked.

    The history's ``train_loss`` is the running MAE in years over the epoch's augmented
    training batches for every model (SFCN's KL objective is logged separately), so all three
    curves share one axis. Under augmentation the train curve can sit above the eval curve;
    drawing both shows that this is the augmentation, not a leak. The eval curve is for
    reading only: the checkpoint is chosen on tune.
    """
    fig, panels = _run_grid(histories, share=False)
    for key, ax in panels.items():
        history = histories[key]
        epoch = history["epoch"]
        ax.plot(epoch, history["train_loss"], color=TRAIN_COLOR, label="train MAE (augmented)")
        ax.plot(epoch, history["tune_mae"], color="C1", label="tune MAE")
        ax.plot(epoch, history["eval_mae"], color=EVAL_COLOR, label="eval MAE")
        best = metrics.best_epoch(history)
        best_mae = float(history.loc[history["epoch"] == best, "tune_mae"].iloc[0])
        ax.axvline(best, color="C1", linestyle=":", linewidth=1)
        ax.plot([best], [best_mae], "*", markersize=10, color="C1", label="best tune epoch")
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel("years", fontsize=8)
        ax.tick_params(labelsize=7)
    _shared_legend(fig, next(iter(panels.values())))
    io.save_figure(fig, path, dpi=DPI)


def _fitted_line(ax: Axes, x: np.ndarray, y: np.ndarray, label: str) -> None:
    """Draw the least-squares line of y on x across the panel.

    It is anchored at the data means (where a least-squares line always passes) because axline
    widens the axis limits to include its anchor point.
    """
    slope, _ = np.polyfit(x, y, 1)
    ax.axline((x.mean(), y.mean()), slope=slope, color="C3", linewidth=1.2, label=label)


def _age_limits(runs: Mapping[RunKey, pd.DataFrame]) -> tuple[float, float]:
    """Common limits for age and predicted age over all runs, so panels compare at a glance."""
    values = np.concatenate([df[["age", "predicted"]].to_numpy(float).ravel() for df in runs.values()])
    margin = 0.05 * (values.max() - values.min()) + 1.0
    return float(values.min() - margin), float(values.max() + margin)


def plot_predictions(runs: Mapping[RunKey, pd.DataFrame], path: str | Path) -> None:
    """Predicted against true age per run: eval points, faint train points, identity and fit.

    The fitted line's slope below the identity shows regression to the mean, which MAE alone
    does not; train points show how much of the fit on eval is overfitting.
    """
    fig, panels = _run_grid(runs, share=True)
    limits = _age_limits(runs)
    for key, ax in panels.items():
        predictions = runs[key]
        train, evaluation = _set(predictions, TRAIN), _set(predictions, EVAL)
        age, predicted = evaluation["age"].to_numpy(float), evaluation["predicted"].to_numpy(float)
        ax.scatter(train["age"], train["predicted"], s=5, color=TRAIN_COLOR, alpha=0.5, lw=0, label=TRAIN)
        ax.scatter(age, predicted, s=12, color=EVAL_COLOR, alpha=0.8, lw=0, label=EVAL)
        centre = (age.mean(), age.mean())
        ax.axline(centre, slope=1.0, color="black", linewidth=0.8, linestyle="--", label="identity")
        _fitted_line(ax, age, predicted, label="eval fit")
        scores = metrics.regression_metrics(age, predicted)
        score = f"MAE {scores['mae']:.1f} y, r = {scores['pearson_r']:.2f}"
        ax.set_title(f"{ax.get_title()}\n{score}", fontsize=9)
        ax.set_xlim(limits)
        ax.set_ylim(limits)
        ax.set_aspect("equal")
        ax.set_xlabel("age (years)", fontsize=8)
        ax.set_ylabel("predicted age (years)", fontsize=8)
        ax.tick_params(labelsize=7)
    _shared_legend(fig, next(iter(panels.values())))
    io.save_figure(fig, path, dpi=DPI)


def plot_error_vs_age(runs: Mapping[RunKey, pd.DataFrame], path: str | Path) -> None:
    """Brain-age gap (predicted − age) against age on eval, with zero line and fitted trend.

    A falling trend is the age bias that bias correction removes; the panel title gives its
    Spearman correlation so the figure and the metrics table can be read together.
    """
    fig, panels = _run_grid(runs, share=True)
    for key, ax in panels.items():
        evaluation = _set(runs[key], EVAL)
        age = evaluation["age"].to_numpy(float)
        gap = evaluation["predicted"].to_numpy(float) - age
        ax.axhline(0.0, color="black", linewidth=0.8, linestyle="--", label="no error")
        ax.scatter(age, gap, s=12, color=EVAL_COLOR, alpha=0.8, lw=0, label=EVAL)
        _fitted_line(ax, age, gap, label="trend")
        rho = metrics.regression_metrics(age, evaluation["predicted"])["gap_age_spearman"]
        ax.set_title(f"{ax.get_title()}\nSpearman ρ(gap, age) = {rho:.2f}", fontsize=9)
        ax.set_xlabel("age (years)", fontsize=8)
        ax.set_ylabel("predicted − age (years)", fontsize=8)
        ax.tick_params(labelsize=7)
    _shared_legend(fig, next(iter(panels.values())))
    io.save_figure(fig, path, dpi=DPI)


REFERENCE_STYLES = {
    metrics.PREDICT_MEAN_MAE: ("predict the train mean", "--"),
    metrics.ORACLE_MAE: ("oracle (biological age)", ":"),
}


def plot_mae_comparison(
    table: pd.DataFrame,
    references: Mapping[str, float],
    path: str | Path,
    spread: pd.DataFrame | None = None,
    spread_label: str = "each training replicate",
    scored: str = "eval MAE",
) -> None:
    """MAE with its bootstrap interval for every modality × model, with reference lines.

    The lines put the numbers in scale: a model near the predict-the-mean line learned little,
    and none can be expected below the oracle line (present only for synthetic data). ``spread``
    (columns modality, model, mae) shows the MAEs behind a headline number as open markers
    beside it wherever a run has several: the training replicates
    (:func:`brainage.metrics.replicate_maes`), so the seed's noise can be read against the
    differences between modalities, or the cross-validation folds
    (:func:`brainage.metrics.fold_maes`, with ``scored`` "out-of-fold MAE"), so the variation
    between held-out sets of that size can.
    """
    if table.empty:
        raise ValueError("no runs to plot")
    modalities = list(dict.fromkeys(table["modality"]))
    models = list(dict.fromkeys(table["model"]))
    fig = Figure(figsize=(1.4 * len(modalities) + 3.0, 3.6), layout="constrained")
    ax = fig.subplots()
    position = {modality: index for index, modality in enumerate(modalities)}
    step = 0.8 / len(models)
    for i, model in enumerate(models):
        rows = table[table["model"] == model]
        offset = (i - (len(models) - 1) / 2) * step
        x = rows["modality"].map(position).to_numpy(float) + offset
        mae = rows["mae"].to_numpy(float)
        error = np.vstack([mae - rows["mae_lo"].to_numpy(float), rows["mae_hi"].to_numpy(float) - mae])
        ax.errorbar(x, mae, yerr=error, fmt="o", capsize=3, markersize=5, color=f"C{i}", label=model)
        if spread is not None and spread.groupby(["modality", "model"]).size().max() > 1:
            own = spread[spread["model"] == model]
            spread_x = own["modality"].map(position).to_numpy(float) + offset + step / 3
            label = spread_label if i == 0 else None
            ax.scatter(spread_x, own["mae"], s=14, facecolors="none", edgecolors=f"C{i}", linewidths=0.8, label=label)
    for key, (label, style) in REFERENCE_STYLES.items():
        if key in references:
            value = float(references[key])
            ax.axhline(value, color="0.3", linestyle=style, linewidth=1, label=f"{label}: {value:.1f} y")
    ax.set_xticks(range(len(modalities)), modalities)
    ax.set_xlim(-0.6, len(modalities) - 0.4)
    ax.set_ylim(bottom=0.0)
    ax.set_ylabel(f"{scored} (years), 95% bootstrap interval")
    fig.legend(loc="outside right upper", fontsize=8, frameon=False)
    io.save_figure(fig, path, dpi=DPI)


def plot_design_differences(split: pd.DataFrame, crossval: pd.DataFrame, path: str | Path) -> None:
    """Paired MAE differences between modalities with 95% intervals, single split beside
    cross-validation: one panel per model, one row per modality pair.

    Both tables are :func:`brainage.metrics.paired_comparisons`'; an interval that excludes 0
    is a difference the design can see, and the intervals' widths compare the designs' power.
    """
    if split.empty or crossval.empty:
        raise ValueError("no comparisons to plot")
    models = list(dict.fromkeys(crossval["model"]))
    pairs = list(dict.fromkeys(zip(crossval["modality_a"], crossval["modality_b"], strict=True)))
    fig = Figure(figsize=(PANEL_SIZE[0] * len(models) + 0.8, 0.45 * len(pairs) + 1.6), layout="constrained")
    axes = fig.subplots(1, len(models), squeeze=False, sharey=True)[0]
    designs = [("single split", split, -0.15), ("cross-validation", crossval, 0.15)]
    for ax, model in zip(axes, models, strict=True):
        for i, (design, table, offset) in enumerate(designs):
            rows = table[table["model"] == model].set_index(["modality_a", "modality_b"])
            present = [pair for pair in pairs if pair in rows.index]
            if not present:
                continue
            rows = rows.loc[present]
            difference = (rows["mae_a"] - rows["mae_b"]).to_numpy(float)
            error = np.vstack([difference - rows["difference_lo"], rows["difference_hi"] - difference])
            y = np.array([pairs.index(pair) for pair in present]) + offset
            label = f"{design} (n = {int(rows['n'].iloc[0])})"
            ax.errorbar(difference, y, xerr=error, fmt="o", capsize=3, markersize=4, color=f"C{i}", label=label)
        ax.axvline(0.0, color="black", linewidth=0.8, linestyle="--")
        ax.set_title(model, fontsize=9)
        ax.set_xlabel("MAE difference a − b (years)", fontsize=8)
        ax.tick_params(labelsize=7)
    _shared_legend(fig, axes[0])
    axes[0].set_yticks(range(len(pairs)), [f"{a} − {b}" for a, b in pairs])
    axes[0].invert_yaxis()
    io.save_figure(fig, path, dpi=DPI)


def _time_unit(seconds: float) -> tuple[float, str]:
    """Divisor and name of the unit that keeps runtimes readable, from seconds to hours."""
    if seconds >= 2 * 3600:
        return 3600.0, "h"
    if seconds >= 2 * 60:
        return 60.0, "min"
    return 1.0, "s"


def plot_benchmarks(summary: pd.DataFrame, path: str | Path) -> None:
    """Total runtime and peak memory per rule (from :func:`brainage.metrics.summarize_benchmarks`).

    Total rather than mean runtime, because it is what the study cost; peak rather than mean
    memory, because it is what a job must request.
    """
    if summary.empty:
        raise ValueError("no benchmarks to plot")
    fig = Figure(figsize=(8.0, 0.35 * len(summary) + 1.4), layout="constrained")
    time_ax, memory_ax = fig.subplots(1, 2, sharey=True)
    rules = summary["rule"].astype(str).tolist()
    divisor, unit = _time_unit(float(np.nanmax(summary["total_s"].to_numpy(float))))
    bars = time_ax.barh(rules, summary["total_s"].to_numpy(float) / divisor, color="C0")
    time_ax.bar_label(bars, fmt="%.3g", fontsize=7, padding=2)
    time_ax.set_xlabel(f"total runtime ({unit})")
    bars = memory_ax.barh(rules, summary["max_rss_mb"].to_numpy(float), color="C2")
    memory_ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=2)
    memory_ax.set_xlabel("peak resident memory (MB)")
    time_ax.invert_yaxis()  # largest total first, as the summary is sorted
    for ax in (time_ax, memory_ax):
        ax.margins(x=0.15)
        ax.tick_params(labelsize=8)
    io.save_figure(fig, path, dpi=DPI)


def plot_youngest_and_oldest(inventory: pd.DataFrame, path: str | Path) -> None:
    """The youngest and the oldest included subject: T1 and PD mid-slices, the MRA's axial MIP.

    ``inventory`` is the inventory table (``subject``, ``age``, ``included``, ``path_T1``,
    ``path_PD``, ``path_MRA``), so the figure shows real IXI and synthetic data alike. The raw
    images are reoriented to RAS by :func:`brainage.io.load_image`, so the panels look the same
    whatever the storage order.
    """
    included = inventory[inventory["included"].astype(bool)].sort_values("age")
    if included.empty:
        raise ValueError("the inventory has no included subject to show")
    chosen = [included.iloc[0], included.iloc[-1]] if len(included) > 1 else [included.iloc[0]]
    figure = Figure(figsize=(9.0, 3.2 * len(chosen)), layout="constrained")
    axes = figure.subplots(len(chosen), 3, squeeze=False)
    for row_axes, record in zip(axes, chosen, strict=True):
        for axis, scan in zip(row_axes, RAW_SCANS, strict=True):
            image = io.load_image(record[f"path_{scan}"], record["subject"])
            data = np.asanyarray(image.dataobj)
            plane = data.max(axis=2) if scan == MRA else data[:, :, data.shape[2] // 2]
            x_mm, y_mm = image.header.get_zooms()[:2]
            # rot90 puts anterior up, the subject's right on the right; the aspect keeps mm square.
            axis.imshow(np.rot90(plane), cmap="gray", aspect=float(y_mm / x_mm))
            axis.set_title(f"{scan} axial MIP" if scan == MRA else f"{scan} mid-slice", fontsize=9)
            axis.set_xticks([])
            axis.set_yticks([])
        row_axes[0].set_ylabel(f"{record['subject']}\nage {float(record['age']):.1f}", fontsize=10)
    io.save_figure(figure, path, dpi=IMAGE_DPI)


def _axial(volume: np.ndarray, k: int) -> np.ndarray:
    """Axial slice shown radiologically upright: rows run anterior to posterior."""
    return np.rot90(volume[:, :, k])


def _mip(volume: np.ndarray) -> np.ndarray:
    """Axial maximum-intensity projection, upright like :func:`_axial`."""
    return np.rot90(volume.max(axis=2))


def _edges(image: np.ndarray) -> np.ndarray:
    """Canny edges of a slice scaled by its 99th percentile, so the threshold suits any contrast."""
    scale = float(np.percentile(image, 99)) or 1.0
    return canny(image / scale, sigma=1.0)


def _overlay(ax: Axes, base: np.ndarray, edges: np.ndarray, colour: str, title: str) -> None:
    """``edges`` in one colour over the grey ``base`` slice."""
    ax.imshow(base, cmap="gray")
    ax.imshow(np.ma.masked_where(~edges, edges), cmap=ListedColormap([colour]), alpha=0.9)
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def plot_qc_subject(images: SubjectImages, path: str | Path, n_slices: int = 3) -> None:
    """A subject's QC figure: PD with the registered T1 and TOF as edge overlays, and projections.

    Misregistration shows as edges that do not follow PD anatomy; the TOF maximum-intensity
    projection beside the vessel mask's shows what binarization kept. ``n_slices`` axial slices
    are spread evenly over the brain mask's extent.
    """
    slices_with_brain = np.flatnonzero((images.brain_mask > 0).any(axis=(0, 1)))
    chosen = np.linspace(slices_with_brain[0], slices_with_brain[-1], n_slices + 2)[1:-1].round().astype(int)
    fig = Figure(figsize=(2.2 * (n_slices + 1), 2.2 * 3))
    axes = fig.subplots(3, n_slices + 1)
    for column, k in enumerate(chosen):
        base = _axial(images.pd, k)
        axes[0, column].imshow(base, cmap="gray")
        axes[0, column].set_title(f"PD z={k}", fontsize=8)
        axes[0, column].axis("off")
        _overlay(axes[1, column], base, _edges(_axial(images.t1, k)), "tab:orange", "T1 edges on PD")
        _overlay(axes[2, column], base, _edges(_axial(images.tof, k)), "tab:red", "TOF edges on PD")
    axes[0, -1].imshow(_mip(images.tof), cmap="gray")
    axes[0, -1].set_title("TOF MIP", fontsize=8)
    axes[1, -1].imshow(_mip(images.vessels), cmap="hot")
    axes[1, -1].set_title("vessel mask MIP", fontsize=8)
    axes[2, -1].imshow(_mip(images.brain_mask), cmap="gray")
    axes[2, -1].set_title("brain mask MIP", fontsize=8)
    for ax in axes[:, -1]:
        ax.axis("off")
    fig.suptitle(images.subject, fontsize=10)
    io.save_figure(fig, path, dpi=IMAGE_DPI)


def plot_qc_gallery(
    subjects: Sequence[str], tof_paths: Sequence[Path], labels: Sequence[str], path: str | Path
) -> None:
    """One figure of every subject's TOF MIP thumbnail, titled with subject id and label (e.g. age).

    ``tof_paths`` may be the registered TOF or its binary mask: a failed registration or an empty
    mask stands out among the thumbnails.
    """
    if not (len(subjects) == len(tof_paths) == len(labels)):
        raise ValueError(f"{len(subjects)} subjects, {len(tof_paths)} images and {len(labels)} labels differ in number")
    columns = max(1, int(np.ceil(np.sqrt(len(subjects)))))
    rows = max(1, int(np.ceil(len(subjects) / columns)))
    fig = Figure(figsize=(1.6 * columns, 1.8 * rows))
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    # The grid's spare cells make axes the longer; the other three were checked equal above.
    for ax, subject, image, label in zip(axes, subjects, tof_paths, labels, strict=False):
        ax.imshow(_mip(io.load_image(image, subject).get_fdata(dtype=np.float32)), cmap="gray")
        ax.set_title(f"{subject}\n{label}", fontsize=6)
    for ax in axes:
        ax.axis("off")
    io.save_figure(fig, path, dpi=IMAGE_DPI)


def plot_split(seed_table: pd.DataFrame, split: pd.DataFrame, path: str | Path) -> None:
    """The split's uniformity: KS D per seed against the stratified D, and the chosen split's ages.

    ``seed_table`` and ``split`` are :func:`brainage.split.make_split`'s. Left: each seed's KS D
    (best seed marked) and the stratified split's D as a line. Right: age histograms (as
    densities, since the sets differ in size) of eval and of train+tune, with the uniform density
    the evaluation set aims for.
    """
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_seeds, ax_ages = fig.subplots(1, 2)

    searched = seed_table[seed_table["method"] == "seed_search"].sort_values("seed")
    ax_seeds.plot(searched["seed"], searched["ks_d"], ".", ms=3, color="0.6", label="train_test_split seeds")
    for row in searched[searched["best_seed"]].itertuples():
        ax_seeds.plot(row.seed, row.ks_d, "o", color="C1", label=f"best seed {row.seed} (D = {row.ks_d:.3f})")
    for row in seed_table[seed_table["method"] == "stratified"].itertuples():
        ax_seeds.axhline(row.ks_d, color="C0", label=f"stratified (D = {row.ks_d:.3f})")
    ax_seeds.set_xlabel("random seed")
    ax_seeds.set_ylabel("KS D of evaluation ages vs uniform")
    ax_seeds.legend(loc="upper right", fontsize="small")

    chosen = seed_table.loc[seed_table["chosen"], "method"]
    evaluation = split.loc[split["set"] == EVAL, "age"]
    development = split.loc[split["set"] != EVAL, "age"]
    lo, hi = float(split["age"].min()), float(split["age"].max())
    edges = np.linspace(lo, hi, 11)
    ax_ages.hist(
        development, bins=edges, density=True, alpha=0.5, color="0.5", label=f"train + tune (n = {len(development)})"
    )
    ax_ages.hist(
        evaluation, bins=edges, density=True, histtype="step", lw=2, color="C0", label=f"eval (n = {len(evaluation)})"
    )
    ax_ages.axhline(1 / (hi - lo), ls="--", color="k", lw=1, label="uniform")
    ax_ages.set_xlabel("age (years)")
    ax_ages.set_ylabel("density")
    ax_ages.set_title(f"chosen split: {chosen.iloc[0] if len(chosen) else '?'}", fontsize="medium")
    ax_ages.legend(loc="upper right", fontsize="small")
    io.save_figure(fig, path, dpi=DPI)


# The three orthogonal views of a grid in RAS order: the axis each looks along, and its name.
VIEWS = ((2, "axial"), (1, "coronal"), (0, "sagittal"))


def _view(volume: np.ndarray, axis: int, index: int | None) -> np.ndarray:
    """A slice (``index``) or, with ``index`` None, the projection of the largest magnitude along ``axis``.

    The projection keeps each ray's value of largest magnitude with its sign, so a signed map
    projects its strongest effect whichever its sign. Shown upright: anterior up in axial
    views, superior up in the others (``np.rot90``).
    """
    if index is None:
        strongest = np.expand_dims(np.abs(volume).argmax(axis=axis), axis)
        plane = np.take_along_axis(volume, strongest, axis=axis).squeeze(axis)
    else:
        plane = np.take(volume, index, axis=axis)
    return np.rot90(plane)


def plot_attribution(
    mean_map: np.ndarray,
    difference: np.ndarray,
    channels: Sequence[str],
    background: np.ndarray,
    title: str,
    path: str | Path,
) -> None:
    """Where a run looks: per channel, its group-mean attribution and the old-minus-young difference.

    ``mean_map`` and ``difference`` are (channel, X, Y, Z) on the training grid (RAS axes), from
    :mod:`brainage.attribution`; ``background`` is the mean training T1 on the same grid. Vessel
    channels (:data:`brainage.vocabulary.ANGIOGRAPHIC_CHANNELS`) are drawn as projections of the
    largest value along each axis, the others as orthogonal slices over the background through
    the voxel of largest mean attribution. Red in the difference: more attribution in the
    oldest eval third than in the youngest.
    """
    fig = Figure(figsize=(8.4, 2.5 * 2 * len(channels) + 0.4), layout="constrained")
    axes = fig.subplots(2 * len(channels), len(VIEWS), squeeze=False)
    for index, channel in enumerate(channels):
        projected = channel in ANGIOGRAPHIC_CHANNELS
        peak = np.unravel_index(int(mean_map[index].argmax()), mean_map[index].shape)
        limit = float(np.abs(difference[index]).max()) or 1.0
        rows = [
            (mean_map[index], "magma", 0.0, float(mean_map[index].max()) or 1.0, "mean attribution share"),
            (difference[index], "RdBu_r", -limit, limit, "oldest − youngest third"),
        ]
        for row, (volume, colours, low, high, label) in enumerate(rows):
            row_axes = axes[2 * index + row]
            for ax, (axis, view) in zip(row_axes, VIEWS, strict=True):
                where = None if projected else int(peak[axis])
                shown = _view(volume, axis, where)
                ax.set_facecolor("black")
                if projected:
                    image = ax.imshow(shown, cmap=colours, vmin=low, vmax=high)
                else:
                    anatomy = _view(background, axis, where)
                    ax.imshow(np.ma.masked_where(anatomy == 0, anatomy), cmap="gray")
                    # Opacity follows the magnitude, so the anatomy shows where there is little attribution.
                    opacity = np.clip(np.abs(shown) / max(abs(low), high), 0.0, 1.0)
                    image = ax.imshow(shown, cmap=colours, vmin=low, vmax=high, alpha=opacity)
                how = "projection" if projected else f"slice {where}"
                ax.set_title(f"{channel} {view} {how}", fontsize=8)
                ax.set_xticks([])
                ax.set_yticks([])
            colorbar = fig.colorbar(image, ax=list(row_axes), shrink=0.8)
            colorbar.set_label(label, fontsize=7)
            colorbar.ax.tick_params(labelsize=6)
    fig.suptitle(title, fontsize=10)
    io.save_figure(fig, path, dpi=IMAGE_DPI)
