"""The synthetic head: tissue maps derived once per process from the MNI152 templates.

The head is the MNI152 2009a symmetric template that nilearn ships (T1, GM and WM probability
maps, brain-extracted, 1 mm). Intracranial volume (ICV) is the template's non-zero region; CSF
is ICV minus GM and WM; the lateral ventricles are the CSF compartment flood-filled from two
seeds; skull and scalp are shells grown outward from the ICV, with a soft-tissue neck below.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import nibabel as nib
import numpy as np

from brainage.templates import TEMPLATE_GM, TEMPLATE_T1, TEMPLATE_WM, template_path

# Centre of the brain in head (template) mm: the pivot of atrophy and of head motion.
BRAIN_CENTRE_MM = (0.0, -18.0, 12.0)
# Seeds inside the left and right lateral ventricles, in template mm.
_VENTRICLE_SEEDS_MM = ((-14.0, -15.0, 15.0), (14.0, -15.0, 15.0))
# A box (template mm) that holds the lateral and third ventricles with a margin.
_VENTRICLE_BOX_MM = ((-40.0, -62.0, -8.0), (40.0, 36.0, 34.0))
# The ventricle map is 1 in the template's ventricles and falls by 0.1 per mm away from them
# (out to this many mm), so lower levels of it are larger ventricles.
_VENTRICLE_REACH_MM = 8
# The template stops 1 mm below the cerebellum; the head is extended down for the neck.
_NECK_PAD_MM = 40
_NECK_TOP_MM = -60.0
# Skull and scalp are level sets of the ICV blurred with this sigma, on a coarse grid: the
# skull is the inner band (about 0-5 mm out), the scalp the outer one (about 5-11 mm out).
_SHELL_STEP_MM = 4
_SHELL_SIGMA_MM = 6.0
SKULL_LEVEL = 0.2
SCALP_LEVEL = 0.035
HEAD_LEVEL = 0.6 * SCALP_LEVEL  # below this level of the shell map there is only air


@dataclass(frozen=True)
class Grid:
    """Maps sampled on a regular grid: ``values`` is (X, Y, Z, channels) with a zero border,
    so interpolation outside reads zero; ``affine`` maps its voxels to head mm."""

    values: np.ndarray
    affine: np.ndarray


@dataclass(frozen=True)
class Anatomy:
    """The template anatomy, ready to be aged and sampled."""

    icv: Grid  # intracranial fraction: fixed by the skull, so it does not shrink with age
    shell: Grid  # blurred ICV, whose levels give the skull and scalp
    brain: Grid  # channels GM, WM and the ventricle map (see _VENTRICLE_REACH_MM): these age


def working_step(scale: float) -> int:
    """Working-grid step in mm: about half the output voxel, never finer than the template."""
    return max(1, round(0.9375 / scale / 2))


@functools.cache
def template_anatomy(step: int) -> Anatomy:
    """Load the templates once per process and derive the tissue maps on a ``step``-mm grid.

    Maps are written straight into their final bordered, neck-padded arrays: full-size
    temporaries cost more than the arithmetic here, and this runs in every subject's job.
    """
    images = [nib.load(template_path(name)) for name in (TEMPLATE_T1, TEMPLATE_GM, TEMPLATE_WM)]
    t1, gm, wm = (np.asarray(image.dataobj, dtype=np.uint8) for image in images)
    affine = images[0].affine
    icv = t1 > 0

    neck_slices = math.ceil(_NECK_PAD_MM / step)
    icv_grid = _empty_grid(icv.shape, affine, step, neck_slices, channels=1)
    brain_grid = _empty_grid(icv.shape, affine, step, neck_slices, channels=3)
    _block_mean_into(icv, step, _interior(icv_grid, neck_slices, 0))
    _block_mean_into(gm, step, _interior(brain_grid, neck_slices, 0), full=255)
    _block_mean_into(wm, step, _interior(brain_grid, neck_slices, 1), full=255)
    corner, ventricles = _lateral_ventricles(icv, gm, wm, affine, step)
    template_origin = (1, 1, 1 + neck_slices)  # grid index of the template's first block
    placed = tuple(slice(o + c, o + c + n) for o, c, n in zip(template_origin, corner, ventricles.shape, strict=True))
    brain_grid.values[(*placed, 2)] = ventricles
    return Anatomy(icv=icv_grid, shell=_shell(icv, affine), brain=brain_grid)


def _empty_grid(
    template_shape: tuple[int, ...], affine: np.ndarray, step: int, neck_slices: int, channels: int
) -> Grid:
    """Zeros for a ``step``-mm grid over the template, with neck slices below and a zero border."""
    shape = (
        template_shape[0] // step + 2,
        template_shape[1] // step + 2,
        template_shape[2] // step + neck_slices + 2,
        channels,
    )
    shift = np.eye(4)
    shift[:3, 3] = (-1.0, -1.0, -1.0 - neck_slices)
    return Grid(np.zeros(shape, dtype=np.float32), _block_affine(affine, step) @ shift)


def _interior(grid: Grid, neck_slices: int, channel: int) -> np.ndarray:
    """The view of one channel of a grid that covers the template itself."""
    return grid.values[1:-1, 1:-1, 1 + neck_slices : -1, channel]


def _shell(icv: np.ndarray, affine: np.ndarray) -> Grid:
    """Blurred ICV on a coarse grid, continued below the template as a soft-tissue neck."""
    neck_slices = math.ceil(_NECK_PAD_MM / _SHELL_STEP_MM)
    grid = _empty_grid(icv.shape, affine, _SHELL_STEP_MM, neck_slices, channels=1)
    _block_mean_into(icv, _SHELL_STEP_MM, _interior(grid, neck_slices, 0))
    shell = grid.values[..., 0]
    shell[...] = _gaussian_blur(shell, _SHELL_SIGMA_MM / _SHELL_STEP_MM)
    z_mm = grid.affine[2, 3] + grid.affine[2, 2] * np.arange(shell.shape[2])
    top = int(np.argmin(np.abs(z_mm - _NECK_TOP_MM)))
    # Capped below the skull level, the neck reads as scalp-like soft tissue, not bone.
    neck = np.minimum(shell[:, :, top], (SKULL_LEVEL + SCALP_LEVEL) / 2)
    shell[:, :, 1:top] = np.maximum(shell[:, :, 1:top], neck[:, :, None])
    # Restore the zero border that makes points outside the grid read zero.
    shell[[0, -1], :, :] = 0.0
    shell[:, [0, -1], :] = 0.0
    shell[:, :, [0, -1]] = 0.0
    return grid


def _lateral_ventricles(
    icv: np.ndarray, gm: np.ndarray, wm: np.ndarray, affine: np.ndarray, step: int
) -> tuple[tuple[int, int, int], np.ndarray]:
    """The ventricle map (see ``_VENTRICLE_REACH_MM``) on the ``step`` grid, in a box.

    Returns the box's first working-grid voxel and the map. The ventricles are the CSF
    connected to two seeds, found by flood fill at 1 mm: thresholding CSF alone also catches
    sulci and cisterns, and connectivity separates them from the subarachnoid space. Repeated
    dilation in a cropped box costs ~0.1 s and spares importing scipy (~0.4 s) in every job.
    """
    to_voxel = np.linalg.inv(affine)
    low, high = (np.round(_apply(to_voxel, np.array(corner))).astype(int) for corner in _VENTRICLE_BOX_MM)
    # Align the box to whole working-grid blocks, with room for the map to reach out.
    margin = math.ceil(_VENTRICLE_REACH_MM / step) + 1
    first_block = low // step - margin
    n_blocks = (high + 1) // step + margin - first_block
    box = tuple(slice(b * step, (b + n) * step) for b, n in zip(first_block, n_blocks, strict=True))
    csf = icv[box] & ((gm[box].astype(np.int16) + wm[box]) < 128)
    region = np.zeros_like(csf)
    for seed_mm in _VENTRICLE_SEEDS_MM:
        centre = np.round(_apply(to_voxel, np.array(seed_mm))).astype(int) - first_block * step
        # The seed point may fall on the septum; start from the most CSF-like voxel near it.
        near = tuple(slice(c - 5, c + 6) for c in centre)
        offset = np.unravel_index(np.argmax(csf[near]), csf[near].shape)
        region[tuple(centre - 5 + np.asarray(offset))] = True
    size = -1
    while size != int(region.sum()):
        size = int(region.sum())
        for _ in range(8):
            region = _dilate6(region) & csf
    # Distance layers around the ventricles; alternating face and cube neighbourhoods make the
    # grown shells roughly round rather than diamond-shaped.
    levels = region.astype(np.uint8) * 10
    reached = region
    for distance in range(1, _VENTRICLE_REACH_MM + 1):
        grown = _dilate26(reached) if distance % 2 == 0 else _dilate6(reached)
        levels[grown & ~reached] = 10 - distance
        reached = grown
    ventricle_map = np.zeros(tuple(n_blocks), dtype=np.float32)
    _block_mean_into(levels, step, ventricle_map, full=10)
    return tuple(int(b) for b in first_block), ventricle_map


def _dilate6(mask: np.ndarray) -> np.ndarray:
    """Grow a mask by one voxel across faces (6-connectivity)."""
    grown = mask.copy()
    grown[1:] |= mask[:-1]
    grown[:-1] |= mask[1:]
    grown[:, 1:] |= mask[:, :-1]
    grown[:, :-1] |= mask[:, 1:]
    grown[:, :, 1:] |= mask[:, :, :-1]
    grown[:, :, :-1] |= mask[:, :, 1:]
    return grown


def _dilate26(mask: np.ndarray) -> np.ndarray:
    """Grow a mask by one voxel into the whole 3x3x3 cube, one axis at a time."""
    grown = mask
    for axis in range(3):
        shifted = grown.copy()
        front = [slice(None)] * 3
        back = [slice(None)] * 3
        front[axis], back[axis] = slice(1, None), slice(None, -1)
        shifted[tuple(front)] |= grown[tuple(back)]
        shifted[tuple(back)] |= grown[tuple(front)]
        grown = shifted
    return grown


def _block_mean_into(volume: np.ndarray, step: int, out: np.ndarray, full: int = 1) -> None:
    """Average step^3 blocks of an integer volume (0..``full``) into ``out`` as fractions.

    Partial-volume fractions stay fractions. Summing strided views into an integer
    accumulator is several times faster than a float reshape-and-mean.
    """
    shape = out.shape
    total = np.zeros(shape, dtype=np.uint32 if step**3 * full > np.iinfo(np.uint16).max else np.uint16)
    for i in range(step):
        for j in range(step):
            for k in range(step):
                total += volume[i : shape[0] * step : step, j : shape[1] * step : step, k : shape[2] * step : step]
    np.multiply(total, np.float32(1.0 / (step**3 * full)), out=out)


def _block_affine(affine: np.ndarray, step: int) -> np.ndarray:
    """Voxel-to-mm affine of a grid of step^3 blocks: block i is centred on voxel step*i+(step-1)/2."""
    blocks = np.diag([step, step, step, 1.0])
    blocks[:3, 3] = (step - 1) / 2
    return affine @ blocks


def _gaussian_blur(volume: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (zero outside), as one small matrix product per axis."""
    blurred = volume
    for axis, n in enumerate(volume.shape):
        positions = np.arange(n)
        kernel = np.exp(-0.5 * ((positions[:, None] - positions[None, :]) / sigma) ** 2).astype(np.float32)
        kernel /= np.float32(sigma * math.sqrt(2.0 * math.pi))
        blurred = np.moveaxis(np.tensordot(blurred, kernel, axes=([axis], [0])), -1, axis)
    return np.ascontiguousarray(blurred, dtype=np.float32)


def _apply(matrix: np.ndarray, point: np.ndarray) -> np.ndarray:
    return matrix[:3, :3] @ point + matrix[:3, 3]
