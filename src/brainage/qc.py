"""Quality control: per-subject overlay figure and numbers, and a gallery of TOF projections.

The per-subject PNG shows PD with the registered T1 and TOF as edge overlays (misregistration
shows as edges that do not follow PD anatomy) and the TOF maximum-intensity projection beside the
vessel mask's projection. The numbers row is what the caller writes as JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import numpy as np
from matplotlib.figure import Figure
from skimage.feature import canny

from brainage.geometry import registration_error_mm, true_from_pd, voxel_centres_ras
from brainage.io import load_image, read_json, save_figure

# The QC numbers every subject gets, in column order: the metrics preprocessing.qc_bounds may
# bound (brainage.config checks the names). Synthetic runs add the reg_error_* columns.
QC_METRICS = ("nmi_T1", "nmi_TOF", "corr_T1", "corr_TOF", "mask_volume_ml", "vessel_volume_ml")


def _axial(volume: np.ndarray, k: int) -> np.ndarray:
    """Axial slice shown radiologically upright: rows run anterior to posterior."""
    return np.rot90(volume[:, :, k])


def _mip(volume: np.ndarray) -> np.ndarray:
    return np.rot90(volume.max(axis=2))


def _edges(image: np.ndarray) -> np.ndarray:
    scale = float(np.percentile(image, 99)) or 1.0
    return canny(image / scale, sigma=1.0)


def _overlay(ax: Any, base: np.ndarray, edges: np.ndarray, colour: str, title: str) -> None:
    ax.imshow(base, cmap="gray")
    ax.imshow(np.ma.masked_where(~edges, edges), cmap=matplotlib.colors.ListedColormap([colour]), alpha=0.9)
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def qc_subject(
    subject: str,
    pd: Path,
    t1_reg: Path,
    tof_reg: Path,
    tof_bin: Path,
    brain_mask: Path,
    registration_json: Path,
    png: Path,
    truth_json: Path | None = None,
    n_slices: int = 3,
) -> dict[str, Any]:
    """Write the subject's QC figure to ``png`` and return its row of QC numbers.

    With ``truth_json`` (synthetic data) the row adds the mean registration error over brain-mask
    voxel centres for T1 and TOF, in mm.
    """
    pd_img = load_image(pd, subject)
    volumes = {
        name: load_image(path, subject).get_fdata(dtype=np.float32)
        for name, path in (("T1", t1_reg), ("TOF", tof_reg), ("bin", tof_bin), ("mask", brain_mask))
    }
    pd_data = pd_img.get_fdata(dtype=np.float32)
    mask = volumes["mask"] > 0
    registration = read_json(registration_json)

    slices_with_brain = np.flatnonzero(mask.any(axis=(0, 1)))
    chosen = np.linspace(slices_with_brain[0], slices_with_brain[-1], n_slices + 2)[1:-1].round().astype(int)
    fig = Figure(figsize=(2.2 * (n_slices + 1), 2.2 * 3), dpi=100)
    axes = fig.subplots(3, n_slices + 1)
    for column, k in enumerate(chosen):
        base = _axial(pd_data, k)
        axes[0, column].imshow(base, cmap="gray")
        axes[0, column].set_title(f"PD z={k}", fontsize=8)
        axes[0, column].axis("off")
        _overlay(axes[1, column], base, _edges(_axial(volumes["T1"], k)), "tab:orange", "T1 edges on PD")
        _overlay(axes[2, column], base, _edges(_axial(volumes["TOF"], k)), "tab:red", "TOF edges on PD")
    axes[0, -1].imshow(_mip(volumes["TOF"]), cmap="gray")
    axes[0, -1].set_title("TOF MIP", fontsize=8)
    axes[1, -1].imshow(_mip(volumes["bin"]), cmap="hot")
    axes[1, -1].set_title("vessel mask MIP", fontsize=8)
    axes[2, -1].imshow(_mip(volumes["mask"]), cmap="gray")
    axes[2, -1].set_title("brain mask MIP", fontsize=8)
    for ax in axes[:, -1]:
        ax.axis("off")
    fig.suptitle(subject, fontsize=10)
    save_figure(fig, png)

    voxel_ml = float(np.prod(pd_img.header.get_zooms()[:3])) / 1000.0
    metrics = {
        "nmi_T1": registration["similarity"]["T1"]["nmi"],
        "nmi_TOF": registration["similarity"]["TOF"]["nmi"],
        "corr_T1": registration["similarity"]["T1"]["corr"],
        "corr_TOF": registration["similarity"]["TOF"]["corr"],
        "mask_volume_ml": float(mask.sum()) * voxel_ml,
        "vessel_volume_ml": float((volumes["bin"] > 0).sum()) * voxel_ml,
    }
    # Through QC_METRICS, so the row holds exactly the metrics the config may bound.
    row: dict[str, Any] = {"subject": subject, **{name: metrics[name] for name in QC_METRICS}}
    if truth_json is not None:
        truth = read_json(truth_json)
        points = voxel_centres_ras(mask, pd_img.affine)
        row["reg_error_T1_mm"] = registration_error_mm(np.asarray(registration["T1_from_PD"]), true_from_pd(truth, "T1"), points)
        row["reg_error_TOF_mm"] = registration_error_mm(
            np.asarray(registration["TOF_from_PD"]), true_from_pd(truth, "MRA"), points
        )
    return row


def qc_gallery(subjects: Sequence[str], tof_paths: Sequence[Path], labels: Sequence[str], path: Path) -> None:
    """One figure of every subject's TOF MIP thumbnail, titled with subject id and label (e.g. age).

    ``tof_paths`` may be the registered TOF or its binary mask: a failed registration or an empty
    mask stands out among the thumbnails.
    """
    if not (len(subjects) == len(tof_paths) == len(labels)):
        raise ValueError(f"{len(subjects)} subjects, {len(tof_paths)} images and {len(labels)} labels differ in number")
    columns = max(1, int(np.ceil(np.sqrt(len(subjects)))))
    rows = max(1, int(np.ceil(len(subjects) / columns)))
    fig = Figure(figsize=(1.6 * columns, 1.8 * rows), dpi=100)
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    for ax, subject, image, label in zip(axes, subjects, tof_paths, labels):
        ax.imshow(_mip(load_image(image, subject).get_fdata(dtype=np.float32)), cmap="gray")
        ax.set_title(f"{subject}\n{label}", fontsize=6)
    for ax in axes:
        ax.axis("off")
    save_figure(fig, path)
