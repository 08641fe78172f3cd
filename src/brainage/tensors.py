"""Training arrays: each PD-space channel resampled onto a fixed grid and cached as ``.npy``.

Training must never decompress NIfTI, so this stage writes one uncompressed array per channel
(``T1``, ``TOF``: z-scored float16; ``TOF_bin``: uint8 0/1). Each channel is resampled once, from
PD voxels straight to grid voxels through one combined matrix, with no intermediate NIfTI.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from brainage.io import ImageError, load_image, save_array
from brainage.vocabulary import BINARY_CHANNELS

# A binary channel becomes the fraction of each grid voxel it covers (3x3x3 sub-samples), kept
# where that fraction reaches this value: a vessel of two thirds of a grid voxel's width, however
# it straddles voxel borders, still covers a ninth of one, so thin vessels survive downsampling.
BINARY_KEEP_FRACTION = 0.1
SUPERSAMPLING = 3
MNI_BRAIN_CENTRE = (0.0, -18.0, 18.0)


def training_grid(
    shape: Sequence[int], spacing: float | Sequence[float], centre_ras: Sequence[float] = MNI_BRAIN_CENTRE
) -> np.ndarray:
    """4x4 RAS affine of a grid with RAS-aligned axes whose centre voxel sits at ``centre_ras``."""
    spacing = np.broadcast_to(np.asarray(spacing, dtype=float), (3,))
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = np.asarray(centre_ras, dtype=float) - (np.asarray(shape, dtype=float) - 1) / 2 * spacing
    return affine


def resample(data: np.ndarray, grid_to_source_voxels: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    """Sample ``data`` at the grid voxels through one voxel-to-voxel matrix; zero outside."""
    return ndimage.affine_transform(
        data.astype(np.float32),
        grid_to_source_voxels,
        output_shape=tuple(shape),
        order=order,
        mode="constant",
        cval=0.0,
    )


def coverage(mask: np.ndarray, grid_to_source_voxels: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Fraction of each grid voxel covered by ``mask``, averaged over a regular sub-voxel lattice."""
    offsets = (np.arange(SUPERSAMPLING) + 0.5) / SUPERSAMPLING - 0.5
    total = np.zeros(tuple(shape), dtype=np.float32)
    for dx in offsets:
        for dy in offsets:
            for dz in offsets:
                shift = np.eye(4)
                shift[:3, 3] = [dx, dy, dz]
                total += resample(mask, grid_to_source_voxels @ shift, shape, order=1)
    return total / SUPERSAMPLING**3


def block_average(volume: np.ndarray, factor: int) -> np.ndarray:
    """The mean of every ``factor``³ block of a 3D ``volume``, in float64, the volume zero-padded
    at its far end to a multiple of ``factor``."""
    padded = np.pad(np.asarray(volume, dtype=np.float64), [(0, -size % factor) for size in volume.shape])
    x, y, z = (size // factor for size in padded.shape)
    return padded.reshape(x, factor, y, factor, z, factor).mean(axis=(1, 3, 5))


def zscore_in_mask(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Z-score with the in-brain mean and SD; zero outside the brain, so background is "average"."""
    inside = values[mask]
    sd = float(inside.std())
    scaled = (values - float(inside.mean())) / (sd if sd > 0 else 1.0)
    return np.where(mask, scaled, 0.0).astype(np.float32)


def make_training_arrays(
    subject: str,
    images: Mapping[str, Path],
    brain_mask: Path,
    grid_shape: Sequence[int],
    grid_spacing: float | Sequence[float],
    arrays: Mapping[str, Path],
    pd_from_template: np.ndarray | None,
) -> None:
    """Write each channel's PD-space image in ``images`` as the array ``arrays[channel]`` (``.npy``).

    With ``pd_from_template`` the grid is in template (MNI) space, centred on the MNI brain centre,
    and grid point p maps to PD by ``pd_from_template @ p``; without it the grid is in PD space,
    centred on the brain mask's centroid. :data:`brainage.vocabulary.BINARY_CHANNELS` stay uint8 0/1
    (area-fraction rule, :data:`BINARY_KEEP_FRACTION`); the others are linearly interpolated,
    z-scored inside the resampled brain mask and stored as float16.
    """
    if set(arrays) != set(images):
        raise ValueError(f"subject {subject}: images of channels {sorted(images)}, arrays of {sorted(arrays)}")
    mask_img = load_image(brain_mask, subject)
    mask = np.asanyarray(mask_img.dataobj) > 0
    if pd_from_template is None:
        centroid = mask_img.affine[:3, :3] @ np.argwhere(mask).mean(axis=0) + mask_img.affine[:3, 3]
        grid = training_grid(grid_shape, grid_spacing, centroid)
        grid_to_pd = grid
    else:
        grid = training_grid(grid_shape, grid_spacing)
        grid_to_pd = np.asarray(pd_from_template, dtype=float) @ grid
    grid_mask = resample(mask, np.linalg.inv(mask_img.affine) @ grid_to_pd, grid_shape, order=1) >= 0.5

    for channel, path in images.items():
        img = load_image(path, subject)
        if img.shape != mask_img.shape or not np.allclose(img.affine, mask_img.affine, atol=1e-3):
            raise ImageError(path, f"grid differs from the brain mask {brain_mask}", subject)
        voxel_map = np.linalg.inv(img.affine) @ grid_to_pd
        data = np.asanyarray(img.dataobj)
        if channel in BINARY_CHANNELS:
            array: np.ndarray = (coverage(data > 0, voxel_map, grid_shape) >= BINARY_KEEP_FRACTION).astype(np.uint8)
        else:
            array = zscore_in_mask(resample(data, voxel_map, grid_shape, order=1), grid_mask).astype(np.float16)
        save_array(array, Path(arrays[channel]))
