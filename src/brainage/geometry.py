"""Coordinates shared by registration and QC, free of ANTs so that QC jobs start fast.

All matrices are 4x4 and act on RAS millimetre points, as nibabel's affines do.
"""

from __future__ import annotations

from typing import Any

import nibabel as nib
import numpy as np

from brainage.vocabulary import PD


def registration_error_mm(estimated: np.ndarray, true: np.ndarray, points: np.ndarray) -> float:
    """Mean Euclidean distance (mm) between where two 4x4 transforms send the same points (N x 3)."""
    points = np.asarray(points, dtype=float).reshape(-1, 3)
    homogeneous = np.c_[points, np.ones(len(points))]
    moved_estimated = homogeneous @ np.asarray(estimated, dtype=float).T
    moved_true = homogeneous @ np.asarray(true, dtype=float).T
    return float(np.linalg.norm(moved_estimated[:, :3] - moved_true[:, :3], axis=1).mean())


def voxel_centres_ras(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """RAS millimetre coordinates (N x 3) of the voxels set in ``mask``."""
    indices = np.argwhere(mask)
    return nib.affines.apply_affine(affine, indices)


def true_from_pd(truth: dict[str, Any], scan: str) -> np.ndarray:
    """``<scan>_from_PD`` implied by synthetic ground truth (head -> scanner matrices per raw scan)."""
    head_to_scanner = truth["head_to_scanner"]
    return np.asarray(head_to_scanner[scan], float) @ np.linalg.inv(np.asarray(head_to_scanner[PD], float))
