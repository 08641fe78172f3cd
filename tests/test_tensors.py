"""Training arrays: orientation, binary channels, z-scoring, float16 precision."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brainage.tensors import block_average, make_training_arrays, training_grid
from brainage.vocabulary import BINARY_CHANNELS, CHANNELS, TOF_BIN

PD_SHAPE = (40, 44, 36)
# PD stored in RAS with 2 mm voxels, origin chosen so the brain centre is off the grid centre.
PD_AFFINE = np.array([[2.0, 0, 0, -38.0], [0, 2.0, 0, -60.0], [0, 0, 2.0, -20.0], [0, 0, 0, 1]])
GRID_SHAPE, GRID_SPACING = (24, 28, 20), 3.0


def write(data: np.ndarray, path: Path, affine: np.ndarray = PD_AFFINE) -> Path:
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


@pytest.fixture()
def subject(tmp_path: Path) -> dict[str, Path]:
    """A PD-space subject: ellipsoid brain, T1-like and TOF-like textures, a one-voxel-thin tube."""
    grid = np.indices(PD_SHAPE).astype(float)
    centre = np.array([20.0, 22.0, 18.0])
    radius = ((grid - centre[:, None, None, None]) / np.array([15.0, 18.0, 13.0])[:, None, None, None]) ** 2
    brain = radius.sum(0) <= 1
    rng = np.random.default_rng(0)
    t1 = (brain * (100.0 + 20.0 * np.sin(grid[0] / 3.0)) + rng.normal(0, 2, PD_SHAPE)).astype(np.float32)
    tof = (brain * 50.0 + rng.normal(0, 5, PD_SHAPE)).astype(np.float32)
    tube = np.zeros(PD_SHAPE, np.uint8)
    tube[20, 10:34, 18] = 1  # 2 mm thick in PD; the 3 mm grid must keep it
    tof[tube > 0] += 200.0
    return {
        "T1": write(t1, tmp_path / "t1.nii.gz"),
        "TOF": write(tof, tmp_path / "tof.nii.gz"),
        "TOF_bin": write(tube, tmp_path / "bin.nii.gz"),
        "mask": write(brain.astype(np.uint8), tmp_path / "mask.nii.gz"),
    }


def test_training_grid_centres_on_the_given_point() -> None:
    affine = training_grid((11, 21, 31), 2.0, (0.0, -18.0, 18.0))
    assert np.allclose(affine[:3, :3], np.eye(3) * 2)
    assert np.allclose(affine @ [5, 10, 15, 1], [0, -18, 18, 1])


@pytest.mark.parametrize("with_template", [False, True])
def test_marker_lands_where_the_grid_affine_says(tmp_path: Path, subject: dict[str, Path], with_template: bool) -> None:
    pd_from_template = None
    mask_img = nib.load(subject["mask"])
    centroid = PD_AFFINE @ np.r_[np.argwhere(np.asarray(mask_img.dataobj) > 0).mean(0), 1]
    if with_template:
        # Template -> PD: a shift plus a 90 degree turn about z, so axis mix-ups show.
        pd_from_template = np.array([[0.0, -1, 0, 5], [1, 0, 0, -8], [0, 0, 1, 4], [0, 0, 0, 1]])
        grid = training_grid(GRID_SHAPE, GRID_SPACING)
        to_pd = pd_from_template @ grid
    else:
        grid = training_grid(GRID_SHAPE, GRID_SPACING, centroid[:3])
        to_pd = grid
    target_voxel = np.array([9, 15, 8])
    marker_ras = to_pd @ np.r_[target_voxel, 1]
    marker_pd_voxel = np.round(np.linalg.inv(PD_AFFINE) @ marker_ras).astype(int)[:3]
    # Put the marker exactly on a PD voxel centre: move the target so both coincide.
    marker_ras = PD_AFFINE @ np.r_[marker_pd_voxel, 1]
    expected = (np.linalg.inv(to_pd) @ marker_ras)[:3]
    marker = np.zeros(PD_SHAPE, np.uint8)
    marker[tuple(marker_pd_voxel)] = 1
    # A binary channel, so that the one-voxel marker survives resampling.
    array = tmp_path / "arrays" / "marker.npy"
    make_training_arrays(
        "s1",
        {TOF_BIN: write(marker, tmp_path / "marker.nii.gz")},
        subject["mask"],
        GRID_SHAPE,
        GRID_SPACING,
        {TOF_BIN: array},
        pd_from_template,
    )
    found = np.load(array)
    peak = np.unravel_index(np.argmax(found), found.shape)
    assert np.linalg.norm(np.array(peak) - expected) < 0.75


def test_channels_are_written_with_their_types(tmp_path: Path, subject: dict[str, Path]) -> None:
    images = {channel: subject[channel] for channel in CHANNELS}
    paths = {channel: tmp_path / "arrays" / f"{channel}.npy" for channel in CHANNELS}
    make_training_arrays("s1", images, subject["mask"], GRID_SHAPE, GRID_SPACING, paths, None)
    # The declared binary channels, and only they, are stored as uint8 masks.
    assert {c for c in CHANNELS if np.load(paths[c]).dtype == np.uint8} == BINARY_CHANNELS
    binary = np.load(paths["TOF_bin"])
    assert binary.dtype == np.uint8 and set(np.unique(binary)) == {0, 1}
    # The 2 mm tube is 24 voxels (48 mm) long: at 3 mm it must still span most of ~16 grid voxels.
    assert binary.sum() >= 12
    for name in ("T1", "TOF"):
        array = np.load(paths[name])
        assert array.dtype == np.float16 and array.shape == GRID_SHAPE
        inside = array != 0
        assert abs(float(array[inside].astype(np.float64).mean())) < 0.05
        assert float(array[inside].astype(np.float64).std()) == pytest.approx(1.0, abs=0.05)
    assert not list((tmp_path / "arrays").glob(".*"))


def test_every_image_needs_its_array_and_every_array_its_image(tmp_path: Path, subject: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match=r"s1.*TOF"):
        make_training_arrays(
            "s1",
            {"T1": subject["T1"], "TOF": subject["TOF"]},
            subject["mask"],
            GRID_SHAPE,
            GRID_SPACING,
            {"T1": tmp_path / "T1.npy"},
            None,
        )


def test_float16_storage_error_is_tiny_on_the_zscore_scale() -> None:
    values = np.random.default_rng(3).standard_normal(100_000).astype(np.float32)
    error = np.abs(values.astype(np.float16).astype(np.float32) - values)
    # float16 keeps 11 significant bits: relative error <= 2**-11, absolute < 2e-3 for |z| < 4.
    assert float(np.max(error[np.abs(values) < 1])) < 1e-3
    assert float(np.max(error / np.maximum(np.abs(values), 1e-3))) <= 2.0**-11


def test_block_average_pads_the_far_end_with_background() -> None:
    averaged = block_average(np.ones((3, 4, 2)), 2)
    assert averaged.shape == (2, 2, 1)
    # Blocks over the last x voxel hold 4 voxels of the image and 4 of padding.
    np.testing.assert_array_equal(averaged, [[[1.0], [1.0]], [[0.5], [0.5]]])
