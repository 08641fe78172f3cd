"""Vessel binarization on a synthetic vessel tree with known ground truth."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brainage.binarize import METHODS, binarize_subject, binarize_vessels

SHAPE = (64, 64, 48)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return 2.0 * (a & b).sum() / (a.sum() + b.sum())


def brain(shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    grid = np.indices(shape).astype(float)
    centre = (np.asarray(shape) - 1) / 2
    radii = np.asarray(shape) * 0.45
    return (((grid - centre[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(0) <= 1


def tube(shape: tuple[int, int, int], start: np.ndarray, end: np.ndarray, r0: float, r1: float) -> np.ndarray:
    """Voxels within a radius (tapering r0 -> r1) of the segment start-end."""
    points = np.indices(shape).reshape(3, -1).T.astype(float)
    direction = end - start
    t = np.clip((points - start) @ direction / (direction @ direction), 0, 1)
    distance = np.linalg.norm(points - (start + t[:, None] * direction), axis=1)
    return (distance <= r0 + (r1 - r0) * t).reshape(shape)


def vessel_tree(shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """A trunk with branches and sub-branches, radii shrinking from 2.5 to 1 voxel."""
    segments = [
        ((32, 10, 24), (32, 32, 24), 2.5, 2.0),
        ((32, 32, 24), (16, 50, 20), 2.0, 1.2),
        ((32, 32, 24), (48, 50, 28), 2.0, 1.2),
        ((32, 32, 24), (32, 40, 40), 1.6, 1.0),
        ((24, 41, 22), (14, 36, 34), 1.3, 1.0),
        ((40, 41, 26), (52, 34, 14), 1.3, 1.0),
    ]
    tree = np.zeros(shape, bool)
    for start, end, r0, r1 in segments:
        tree |= tube(shape, np.array(start, float), np.array(end, float), r0, r1)
    return tree & brain(shape)


def tof_image(tree: np.ndarray, seed: int = 0) -> np.ndarray:
    """Bright tubes on a dim noisy background with a mild linear bias field."""
    rng = np.random.default_rng(seed)
    bias = 1.0 + 0.15 * np.linspace(-1, 1, tree.shape[0])[:, None, None]
    image = 100.0 + 8.0 * rng.standard_normal(tree.shape) + 150.0 * tree
    return (image * bias).astype(np.float32)


@pytest.fixture(scope="module")
def tree() -> np.ndarray:
    return vessel_tree()


@pytest.mark.parametrize("method", METHODS)
def test_methods_recover_the_vessel_tree(tree: np.ndarray, method: str) -> None:
    mask = brain()
    fraction = 100.0 * tree.sum() / mask.sum()
    found = binarize_vessels(tof_image(tree), mask, method=method, percentile=fraction, spacing=(1, 1, 1))
    assert found.dtype == np.uint8 and set(np.unique(found)) <= {0, 1}
    assert dice(found, tree) >= 0.8
    assert not found[~mask].any()


def test_vesselness_sigmas_follow_the_voxel_size(tree: np.ndarray) -> None:
    """Same tubes, voxels labelled 0.5 mm: sigmas given in mm must still match the tube radii."""
    found = binarize_vessels(tof_image(tree), brain(), method="vesselness", spacing=(0.5, 0.5, 0.5), sigmas=(0.5, 1.0))
    assert dice(found, tree) >= 0.8


def test_vesselness_on_pure_noise_keeps_half_what_otsu_keeps() -> None:
    """Documented limit: noise is not rejected, only reduced relative to intensity thresholding."""
    mask = brain()
    noise = np.random.default_rng(1).uniform(0, 1, SHAPE).astype(np.float32)
    structural = binarize_vessels(noise, mask, method="vesselness", min_component_voxels=20)
    intensity = binarize_vessels(noise, mask, method="otsu", min_component_voxels=20)
    assert structural.sum() < 0.6 * intensity.sum()


def test_intensity_methods_on_noise_keep_their_quota_minus_specks() -> None:
    """Documented behaviour: percentile keeps p% by construction; the component filter trims specks."""
    mask = brain()
    noise = np.random.default_rng(2).uniform(0, 1, SHAPE).astype(np.float32)
    raw = binarize_vessels(noise, mask, method="percentile", percentile=2.0, min_component_voxels=1)
    filtered = binarize_vessels(noise, mask, method="percentile", percentile=2.0, min_component_voxels=5)
    assert raw.sum() == pytest.approx(0.02 * mask.sum(), rel=0.05)
    assert filtered.sum() < 0.2 * raw.sum()


def test_small_components_are_removed() -> None:
    tof = np.zeros(SHAPE, np.float32)
    tof[10:12, 30, 24] = 1.0  # 2 voxels: a speck
    tof[20:40, 30, 24] = 1.0  # 20 voxels: a vessel
    found = binarize_vessels(tof, brain(), method="otsu", min_component_voxels=5)
    assert found.sum() == 20


def test_unknown_method_lists_valid_ones(tree: np.ndarray) -> None:
    with pytest.raises(ValueError, match="percentile, otsu, vesselness"):
        binarize_vessels(tof_image(tree), brain(), method="hessian")


def test_binarize_subject_writes_uint8_on_the_same_grid(tree: np.ndarray, tmp_path: Path) -> None:
    affine = np.diag([0.9, 0.9, 1.2, 1.0])
    affine[:3, 3] = [-30.0, -40.0, -20.0]
    nib.save(nib.Nifti1Image(tof_image(tree), affine), tmp_path / "tof.nii.gz")
    nib.save(nib.Nifti1Image(brain().astype(np.uint8), affine), tmp_path / "mask.nii.gz")
    out = tmp_path / "s1_TOF_reg_PD_bin.nii.gz"
    stats = binarize_subject("s1", tmp_path / "tof.nii.gz", tmp_path / "mask.nii.gz", out, method="otsu")
    img = nib.load(out)
    assert img.get_data_dtype() == np.uint8
    assert np.allclose(img.affine, affine) and img.shape == SHAPE
    assert stats["voxels"] == int(np.asarray(img.dataobj).sum())
    assert stats["volume_ml"] == pytest.approx(stats["voxels"] * 0.9 * 0.9 * 1.2 / 1000)
