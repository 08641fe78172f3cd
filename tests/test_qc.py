"""QC figure, numbers row and gallery on a toy subject built directly in PD space."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import nibabel as nib
import numpy as np
import pytest

from brainage.qc import qc_gallery, qc_subject

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
        nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.uint8 if name in ("bin", "mask") else np.float32), AFFINE), files[name])
    registration = {
        "T1_from_PD": shift((1.0, 0.0, 0.0)).tolist(),
        "TOF_from_PD": shift((0.0, 2.0, 0.0)).tolist(),
        "similarity": {"T1": {"nmi": 1.2, "corr": 0.5}, "TOF": {"nmi": 1.1, "corr": 0.3}},
    }
    files["registration"] = tmp_path / "registration.json"
    files["registration"].write_text(json.dumps(registration))
    # Truth: the head moved 1 mm in x for T1, nothing for MRA; PD itself sits 5 mm off the head.
    truth = {"head_to_scanner": {"PD": shift((5.0, 0, 0)).tolist(), "T1": shift((6.0, 0, 0)).tolist(),
                                 "MRA": shift((5.0, 0, 0)).tolist()}}
    files["truth"] = tmp_path / "truth.json"
    files["truth"].write_text(json.dumps(truth))
    return files


def assert_png_not_blank(path: Path) -> None:
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 50 and pixels.shape[1] > 50
    assert float(pixels[..., :3].std()) > 0.05


def test_qc_subject_writes_a_figure_and_sane_numbers(toy: dict[str, Path], tmp_path: Path) -> None:
    png = tmp_path / "qc" / "s1_qc.png"
    row = qc_subject(
        "s1", toy["PD"], toy["T1"], toy["TOF"], toy["bin"], toy["mask"], toy["registration"], png, toy["truth"]
    )
    assert_png_not_blank(png)
    brain_voxels = int(np.asarray(nib.load(toy["mask"]).dataobj).sum())
    assert row["subject"] == "s1"
    assert row["mask_volume_ml"] == pytest.approx(brain_voxels * 36 / 1000)
    assert row["vessel_volume_ml"] == pytest.approx(4 * 24 * 36 / 1000)
    assert row["nmi_T1"] == 1.2 and row["corr_TOF"] == 0.3
    assert row["reg_error_T1_mm"] == pytest.approx(0.0, abs=1e-9)
    assert row["reg_error_TOF_mm"] == pytest.approx(2.0)
    json.dumps(row)


def test_qc_subject_without_truth_has_no_error_columns(toy: dict[str, Path], tmp_path: Path) -> None:
    row = qc_subject("s1", toy["PD"], toy["T1"], toy["TOF"], toy["bin"], toy["mask"], toy["registration"], tmp_path / "q.png")
    assert "reg_error_T1_mm" not in row


def test_gallery_shows_every_subject(toy: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "gallery.png"
    qc_gallery(["s1", "s2", "s3"], [toy["TOF"], toy["bin"], toy["TOF"]], ["age 30", "age 41", "age 67"], path)
    assert_png_not_blank(path)
    with pytest.raises(ValueError, match="differ in number"):
        qc_gallery(["s1"], [toy["TOF"], toy["TOF"]], ["age 30"], path)
