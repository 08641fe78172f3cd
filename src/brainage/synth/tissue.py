"""Noise-free images of the aged anatomy: template maps sampled on a scan's voxel grid."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from brainage.synth.ageing import AgeEffects
from brainage.synth.anatomy import BRAIN_CENTRE_MM, HEAD_LEVEL, SCALP_LEVEL, SKULL_LEVEL, Anatomy, Grid

_TISSUES = ("gm", "wm", "csf", "skull", "scalp")
CONTRAST: dict[str, dict[str, float]] = {
    # T1: WM > GM > CSF, bright scalp fat, dark bone.
    "T1": {"gm": 0.60, "wm": 1.00, "csf": 0.18, "skull": 0.06, "scalp": 0.70},
    # PD: CSF > GM > WM.
    "PD": {"gm": 0.80, "wm": 0.64, "csf": 1.00, "skull": 0.08, "scalp": 0.72},
    # TOF-MRA: stationary tissue is saturated and dim; only inflowing blood is bright.
    "MRA": {"gm": 0.17, "wm": 0.13, "csf": 0.07, "skull": 0.03, "scalp": 0.25},
}
_CHUNK_VOXELS = 1 << 21


def render_tissue(
    shape: tuple[int, int, int],
    voxel_to_head: np.ndarray,
    effects: AgeEffects,
    anatomy: Anatomy,
    contrast: Mapping[str, float],
) -> np.ndarray:
    """Noise-free image of the aged anatomy on a voxel grid, one slab of slices at a time."""
    centre = np.asarray(BRAIN_CENTRE_MM)
    # A smaller brain at a voxel means the template is sampled farther from the centre.
    shrink = np.eye(4)
    shrink[:3, :3] /= effects.brain_scale
    shrink[:3, 3] = centre - centre / effects.brain_scale
    image = np.empty(shape, dtype=np.float32)
    slices_per_chunk = max(1, _CHUNK_VOXELS // (shape[0] * shape[1]))
    for k0 in range(0, shape[2], slices_per_chunk):
        k1 = min(shape[2], k0 + slices_per_chunk)
        ijk = np.indices((shape[0], shape[1], k1 - k0), dtype=np.float32).reshape(3, -1)
        ijk[2] += k0
        shell = _sample(anatomy.shell, voxel_to_head, ijk)[:, 0]
        # Most of a field of view is air: sample the fine maps only inside the head.
        in_head = shell > HEAD_LEVEL
        head_ijk = ijk[:, in_head]
        fractions = _tissue_fractions(
            icv=_sample(anatomy.icv, voxel_to_head, head_ijk)[:, 0],
            shell=shell[in_head],
            brain=_sample(anatomy.brain, shrink @ voxel_to_head, head_ijk),
            effects=effects,
        )
        slab = np.zeros(ijk.shape[1], dtype=np.float32)
        slab[in_head] = sum(contrast[tissue] * fractions[tissue] for tissue in _TISSUES)
        image[:, :, k0:k1] = slab.reshape(shape[0], shape[1], k1 - k0)
    return image


def _tissue_fractions(
    icv: np.ndarray, shell: np.ndarray, brain: np.ndarray, effects: AgeEffects
) -> dict[str, np.ndarray]:
    """Tissue fractions from sampled template maps: a fixed skull around an aged brain."""
    gm, wm, ventricle_map = brain.T
    gm = np.clip((gm - effects.gm_erosion) / (1.0 - effects.gm_erosion), 0.0, 1.0)
    ventricles = np.clip((ventricle_map - effects.ventricle_level) / 0.1, 0.0, 1.0)
    gm = gm * (1.0 - ventricles) * icv
    wm = wm * (1.0 - ventricles) * icv
    outside = 1.0 - icv
    skull = outside * _ramp(shell, SKULL_LEVEL * 0.75, SKULL_LEVEL * 1.25)
    head = _ramp(shell, HEAD_LEVEL, SCALP_LEVEL * 1.4)
    return {
        "gm": gm,
        "wm": wm,
        "csf": np.clip(icv - gm - wm, 0.0, 1.0),
        "skull": skull,
        "scalp": np.clip(outside * head - skull, 0.0, 1.0),
    }


def _ramp(values: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.clip((values - low) / (high - low), 0.0, 1.0)


def _sample(grid: Grid, voxel_to_head: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    """Trilinear samples, (N, channels), of a grid at scan voxels ``ijk`` (3, N).

    Points outside are clamped onto the grid's zero border, so they read zero. Written with
    numpy because scipy.ndimage costs ~0.4 s to import in every subject's job.
    """
    points = _apply_grid(np.linalg.inv(grid.affine) @ voxel_to_head, ijk)
    shape = grid.values.shape[:3]
    table = grid.values.reshape(-1, grid.values.shape[3])
    strides = (shape[1] * shape[2], shape[2], 1)
    index = np.zeros(ijk.shape[1], dtype=np.intp)
    fractions = []
    for axis in range(3):
        coordinate = np.clip(points[axis], 0.0, shape[axis] - 1.001)
        base = coordinate.astype(np.intp)  # floor, as the coordinate is non-negative
        index += base * strides[axis]
        fractions.append((coordinate - base.astype(np.float32))[:, None])

    def corner(di: int, dj: int, dk: int) -> np.ndarray:
        # np.take: several times faster than fancy indexing for row gathers.
        return np.take(table, index + (di * strides[0] + dj * strides[1] + dk * strides[2]), axis=0)

    def lerp(low: np.ndarray, high: np.ndarray, fraction: np.ndarray) -> np.ndarray:
        return low + (high - low) * fraction

    fi, fj, fk = fractions
    return lerp(
        lerp(lerp(corner(0, 0, 0), corner(0, 0, 1), fk), lerp(corner(0, 1, 0), corner(0, 1, 1), fk), fj),
        lerp(lerp(corner(1, 0, 0), corner(1, 0, 1), fk), lerp(corner(1, 1, 0), corner(1, 1, 1), fk), fj),
        fi,
    )


def _apply_grid(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 affine to (3, N) points, in float32."""
    return (matrix[:3, :3].astype(np.float32) @ points) + matrix[:3, 3:4].astype(np.float32)
