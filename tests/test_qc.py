"""QC numbers row on a toy subject built directly in PD space (the figures: tests/test_plots.py)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brainage.qc import SubjectImages, load_subject_images, qc_numbers

SHAPE = (32, 36, 24)
AFFINE = np.diag([3.0, 3.0, 4.0, 1.0])


def shift(mm: tuple[float, float, float]) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, 3] = mm
    return matrix


@pytest.fixture()
def toy(tmp_path: Path) -> dict[str, Path]:
    grid = np.indices(SHAPE).astype(float)
    centre = (np.array(SHAPE) - 1) / 2
    brain = (((grid - centre[:, None, None, None]) / (np.array(SHAPE) * 0.4)[:, None, None, None]) ** 2).sum(0) <= 1
    rng = np.random.default_rng(0)
    pd = brain * (80.0 + 10 * np.cos(grid[0] / 2)) + rng.normal(0, 2, SHAPE)
    t1 = brain * (60.0 + 10 * np.sin(grid[1] / 2)) + rng.normal(0, 2, SHAPE)
    tof = brain * 30.0 + rng.normal(0, 2, SHAPE)
    vessels = np.zeros(SHAPE, np.uint8)
    vessels[14:18, 6:30, 12] = 1
    tof[vessels > 0] += 100
    files = {}
    for name, data in (("PD", pd), ("T1", t1), ("TOF", tof), ("bin", vessels), ("mask", brain.astype(np.uint8))):
        files[name] = tmp_path / f"{name}.nii.gz"
        nib.save(
            nib.Nifti1Image(np.asarray(data, dtype=np.uint8 if name in ("bin", "mask") else np.float32), AFFINE),
            files[name],
        )
    registration = {
        "T1_from_PD": shift((1.0, 0.0, 0.0)).tolist(),
        "TOF_from_PD": shift((0.0, 2.0, 0.0)).tolist(),
        "similarity": {"T1": {"nmi": 1.2, "corr": 0.5}, "TOF": {"nmi": 1.1, "corr": 0.3}},
    }
    files["registration"] = tmp_path / "registration.json"
    files["registration"].write_text(json.dumps(registration))
    # Truth: the head moved 1 mm in x for T1, nothing for MRA; PD itself sits 5 mm off the head.
    truth = {
        "head_to_scanner": {
            "PD": shift((5.0, 0, 0)).tolist(),
            "T1": shift((6.0, 0, 0)).tolist(),
            "MRA": shift((5.0, 0, 0)).tolist(),
        }
    }
    files["truth"] = tmp_path / "truth.json"
    files["truth"].write_text(json.dumps(truth))
    return files


def subject_images(toy: dict[str, Path]) -> SubjectImages:
    return load_subject_images("s1", toy["PD"], toy["T1"], toy["TOF"], toy["bin"], toy["mask"])


def test_qc_numbers_are_sane(toy: dict[str, Path]) -> None:
    row = qc_numbers(subject_images(toy), toy["registration"], toy["truth"])
    brain_voxels = int(np.asarray(nib.load(toy["mask"]).dataobj).sum())
    assert row["subject"] == "s1"
    assert row["mask_volume_ml"] == pytest.approx(brain_voxels * 36 / 1000)
    assert row["vessel_volume_ml"] == pytest.approx(4 * 24 * 36 / 1000)
    assert row["nmi_T1"] == 1.2 and row["corr_TOF"] == 0.3
    assert row["reg_error_T1_mm"] == pytest.approx(0.0, abs=1e-9)
    assert row["reg_error_TOF_mm"] == pytest.approx(2.0)
    json.dumps(row)


def test_qc_numbers_without_truth_have_no_error_columns(toy: dict[str, Path]) -> None:
    row = qc_numbers(subject_images(toy), toy["registration"])
    assert "reg_error_T1_mm" not in row


def test_subject_images_keep_pd_geometry(toy: dict[str, Path]) -> None:
    loaded = subject_images(toy)
    assert loaded.pd.shape == loaded.t1.shape == loaded.brain_mask.shape == SHAPE
    assert np.array_equal(loaded.affine, AFFINE)
    assert tuple(map(float, loaded.zooms)) == (3.0, 3.0, 4.0)
