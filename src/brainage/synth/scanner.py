"""Acquisition: scan geometry, head pose and motion, bias field, Rician noise and site gain.

Matrix sizes and voxel spacings follow IXI at ``scale=1`` (matrix times ``scale``, spacing
divided by ``scale``, so the field of view stays fixed): T1 256x256x150 sagittal (stored P-S-R,
not RAS), PD 256x256x130 axial, MRA 512x512x100 axial slab of 80 mm set low over the circle of
Willis rather than centred on the head. Each image gets a smooth multiplicative bias field,
Rician noise and a site-dependent gain, and is stored as int16 with qform and sform set to the
scanner frame (code 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import nibabel as nib
import numpy as np

from brainage.synth.anatomy import BRAIN_CENTRE_MM
from brainage.vocabulary import RAW_SCANS

# Scanners differ in receiver gain: the same tissue reads differently per site.
_SITE_GAIN = {"Guys": 1.0, "HH": 1.3, "IOP": 0.8}
_FULL_SCALE = {"T1": 900.0, "PD": 1000.0, "MRA": 800.0}
_NOISE_SIGMA = 0.02
_BIAS_STRENGTH = 0.04


@dataclass(frozen=True)
class _ScanSpec:
    """IXI acquisition geometry at scale 1: matrix, spacing (mm), axis codes, FOV centre."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    axcodes: tuple[str, str, str]
    centre_mm: tuple[float, float, float]  # scanner coordinates of the FOV centre


_SCANS = {
    # Sagittal T1 stored posterior-superior-right, like IXI: readers must reorient.
    "T1": _ScanSpec((256, 256, 150), (0.9375, 0.9375, 1.2), ("P", "S", "R"), (0.0, 0.0, -10.0)),
    "PD": _ScanSpec((256, 256, 130), (0.9375, 0.9375, 1.2), ("L", "A", "S"), (0.0, 0.0, 0.0)),
    # An 80 mm axial slab from the skull base up: the brain centre sits near its top, not middle.
    "MRA": _ScanSpec((512, 512, 100), (0.469, 0.469, 0.8), ("L", "A", "S"), (0.0, 0.0, -22.0)),
}
_AXIS_DIRECTIONS = {"R": (1, 0, 0), "L": (-1, 0, 0), "A": (0, 1, 0), "P": (0, -1, 0), "S": (0, 0, 1), "I": (0, 0, -1)}
_MAX_ROTATION_DEG = 5.0
_MAX_TRANSLATION_MM = 5.0


def scan_grid(scan: str, scale: float) -> tuple[tuple[int, int, int], np.ndarray]:
    """Matrix size and voxel-to-scanner affine of a scan at ``scale``."""
    spec = _SCANS[scan]
    shape = tuple(max(8, round(n * scale)) for n in spec.shape)
    spacing = np.asarray(spec.spacing) / scale
    affine = np.eye(4)
    for axis, code in enumerate(spec.axcodes):
        affine[:3, axis] = np.asarray(_AXIS_DIRECTIONS[code]) * spacing[axis]
    affine[:3, 3] = np.asarray(spec.centre_mm) - affine[:3, :3] @ ((np.asarray(shape) - 1) / 2)
    return shape, affine


def _rotation(angles_deg: np.ndarray) -> np.ndarray:
    rx, ry, rz = np.radians(angles_deg)
    about_x = np.array([[1, 0, 0], [0, math.cos(rx), -math.sin(rx)], [0, math.sin(rx), math.cos(rx)]])
    about_y = np.array([[math.cos(ry), 0, math.sin(ry)], [0, 1, 0], [-math.sin(ry), 0, math.cos(ry)]])
    about_z = np.array([[math.cos(rz), -math.sin(rz), 0], [math.sin(rz), math.cos(rz), 0], [0, 0, 1]])
    return about_z @ about_y @ about_x


def _rigid(rotation: np.ndarray, pivot: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """4x4 rotation about ``pivot`` followed by ``translation``."""
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = pivot - rotation @ pivot + translation
    return matrix


def head_to_scanner(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-scan head poses: a session pose (head tilt and table position) times scan motion."""
    centre = np.asarray(BRAIN_CENTRE_MM)
    tilt = _rotation(np.array([rng.uniform(-8.0, 8.0), rng.uniform(-3.0, 3.0), rng.uniform(-3.0, 3.0)]))
    placement = np.array([rng.uniform(-5.0, 5.0), rng.uniform(-8.0, 8.0), rng.uniform(-8.0, 8.0)])
    session = _rigid(tilt, centre, placement - centre)
    poses = {}
    for scan in RAW_SCANS:
        angles = rng.uniform(-_MAX_ROTATION_DEG, _MAX_ROTATION_DEG, 3)
        shift = rng.uniform(-_MAX_TRANSLATION_MM, _MAX_TRANSLATION_MM, 3)
        motion = _rigid(_rotation(angles), placement, shift)
        poses[scan] = motion @ session
    return poses


def _bias_field(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """Smooth multiplicative field: exp of a random quadratic over the field of view."""
    axes = [np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape]
    grids = np.meshgrid(*axes, indexing="ij", sparse=True)
    terms = [*grids, grids[0] * grids[1], grids[0] * grids[2], grids[1] * grids[2], *(g * g for g in grids)]
    log_field = sum(rng.normal(0.0, _BIAS_STRENGTH) * term for term in terms)
    return np.exp(np.broadcast_to(log_field, shape)).astype(np.float32)


def acquire(clean: np.ndarray, scan: str, site: str, rng: np.random.Generator) -> np.ndarray:
    """Bias field, Rician noise and site gain on a clean image, stored as int16 like IXI."""
    biased = clean * _bias_field(clean.shape, rng)
    real = biased + rng.normal(0.0, _NOISE_SIGMA, clean.shape).astype(np.float32)
    imaginary = rng.normal(0.0, _NOISE_SIGMA, clean.shape).astype(np.float32)
    magnitude = np.hypot(real, imaginary)
    counts = np.rint(magnitude * _FULL_SCALE[scan] * _SITE_GAIN[site])
    return np.clip(counts, 0, np.iinfo(np.int16).max).astype(np.int16)


def scanner_image(data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    """NIfTI with qform and sform both in the scanner frame (code 1), as IXI headers are."""
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    return image
