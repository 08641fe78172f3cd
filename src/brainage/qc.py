"""Quality control numbers: registration similarity, mask and vessel volumes, registration error.

:func:`load_subject_images` reads a subject's PD-space images once; :func:`qc_numbers` turns
them into the row the caller writes as JSON, and :func:`brainage.plots.plot_qc_subject` draws
the same images as the subject's QC figure, so a job reads each image once for both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from brainage.geometry import registration_error_mm, true_from_pd, voxel_centres_ras
from brainage.io import load_image, read_json
from brainage.vocabulary import REGISTERED_FROM, T1, TOF

# The QC numbers every subject gets, in column order: the metrics preprocessing.qc_bounds may
# bound (config/schema.yaml lists them; tests/test_config.py pins the two together). Synthetic
# runs add the reg_error_* columns.
QC_METRICS = ("nmi_T1", "nmi_TOF", "corr_T1", "corr_TOF", "mask_volume_ml", "vessel_volume_ml")


@dataclass(frozen=True)
class SubjectImages:
    """A subject's images in PD space as float32 arrays, with PD's affine and voxel size (mm)."""

    subject: str
    pd: np.ndarray
    t1: np.ndarray
    tof: np.ndarray
    vessels: np.ndarray
    brain_mask: np.ndarray
    affine: np.ndarray
    zooms: tuple[float, ...]


def load_subject_images(
    subject: str, pd: Path, t1_reg: Path, tof_reg: Path, tof_bin: Path, brain_mask: Path
) -> SubjectImages:
    """Read PD, the registered T1 and TOF, the vessel mask and the brain mask of ``subject``."""
    pd_img = load_image(pd, subject)
    t1, tof, vessels, mask = (
        load_image(path, subject).get_fdata(dtype=np.float32) for path in (t1_reg, tof_reg, tof_bin, brain_mask)
    )
    pd_data = pd_img.get_fdata(dtype=np.float32)
    return SubjectImages(subject, pd_data, t1, tof, vessels, mask, pd_img.affine, pd_img.header.get_zooms()[:3])


def qc_numbers(images: SubjectImages, registration_json: Path, truth_json: Path | None = None) -> dict[str, Any]:
    """The subject's row of QC numbers: ``subject`` and :data:`QC_METRICS`.

    With ``truth_json`` (synthetic data) the row adds the mean registration error over brain-mask
    voxel centres for T1 and TOF, in mm.
    """
    registration = read_json(registration_json)
    mask = images.brain_mask > 0
    voxel_ml = float(np.prod(images.zooms)) / 1000.0
    metrics = {
        "nmi_T1": registration["similarity"]["T1"]["nmi"],
        "nmi_TOF": registration["similarity"]["TOF"]["nmi"],
        "corr_T1": registration["similarity"]["T1"]["corr"],
        "corr_TOF": registration["similarity"]["TOF"]["corr"],
        "mask_volume_ml": float(mask.sum()) * voxel_ml,
        "vessel_volume_ml": float((images.vessels > 0).sum()) * voxel_ml,
    }
    # Through QC_METRICS, so the row holds exactly the metrics the config may bound.
    row: dict[str, Any] = {"subject": images.subject, **{name: metrics[name] for name in QC_METRICS}}
    if truth_json is not None:
        truth = read_json(truth_json)
        points = voxel_centres_ras(mask, images.affine)
        for channel in (T1, TOF):
            # The truth records the raw scans' poses: the TOF's is the MRA's.
            row[f"reg_error_{channel}_mm"] = registration_error_mm(
                np.asarray(registration[f"{channel}_from_PD"]), true_from_pd(truth, REGISTERED_FROM[channel]), points
            )
    return row
