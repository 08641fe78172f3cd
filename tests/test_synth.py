"""Tests of the synthetic IXI-like dataset: layout, spreadsheet quirks, images and age signal.

One small cohort is synthesized once per module at a coarse scale; tests read it back through
public files only (NIfTI headers, the spreadsheet, the truth JSON), as later stages will.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import xlrd
from scipy import ndimage

from brainage import synth
from brainage.paths import IXI_SUBJECT
from brainage.templates import TEMPLATE_GM, TEMPLATE_T1, TEMPLATE_WM, template_path
from conftest import IXI_SHEET_HEADER

SCALE = 0.15
SEED = 11
N_SUBJECTS = 22

# IXI acquisition at scale 1: matrix and voxel size (mm), per modality.
IXI_GEOMETRY = {
    "T1": ((256, 256, 150), (0.9375, 0.9375, 1.2)),
    "PD": ((256, 256, 130), (0.9375, 0.9375, 1.2)),
    "MRA": ((512, 512, 100), (0.469, 0.469, 0.8)),
}
PLAN_COLUMNS = ["subject", "ixi_id", "site", "series", "sex", "age", "bio_age", "has_mra", "sheet_status", "imaged"]
EXCEL_EPOCH = pd.Timestamp("1899-12-30")


@dataclass(frozen=True)
class Dataset:
    plan: pd.DataFrame
    raw: Path
    truth: Path
    root: Path

    @property
    def imaged(self) -> pd.DataFrame:
        return self.plan[self.plan["imaged"]]

    @property
    def with_mra(self) -> pd.DataFrame:
        return self.plan[self.plan["imaged"] & self.plan["has_mra"]]

    def image(self, row: pd.Series, modality: str) -> nib.Nifti1Image:
        return nib.load(self.raw / synth.subject_files(row)[modality])

    def head_to_scanner(self, subject: str, modality: str) -> np.ndarray:
        truth = json.loads((self.truth / f"{subject}.json").read_text())
        return np.asarray(truth["head_to_scanner"][modality])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    root = tmp_path_factory.mktemp("synth")
    plan = synth.plan_cohort(N_SUBJECTS, SEED)
    raw, truth = root / "raw", root / "truth"
    for _, row in plan[plan["imaged"]].iterrows():
        synth.synthesize_subject(row, raw, truth / f"{row['subject']}.json", SCALE, SEED)
    synth.write_demographics(plan, raw / "IXI.xls", SEED)
    synth.write_ground_truth_table(plan, root / "ground_truth.csv")
    return Dataset(plan, raw, truth, root)


def scanner_points(image: nib.Nifti1Image) -> np.ndarray:
    """Scanner mm of every voxel, (N, 3), in C order like ``data.ravel()``."""
    ijk = np.indices(image.shape).reshape(3, -1).T
    return ijk @ image.affine[:3, :3].T + image.affine[:3, 3]


def head_foreground(data: np.ndarray) -> np.ndarray:
    return data > 0.3 * np.percentile(data, 99)


# ---------------------------------------------------------------------------------------------
# Plan
# ---------------------------------------------------------------------------------------------


def test_plan_has_the_documented_columns_and_is_deterministic() -> None:
    plan = synth.plan_cohort(40, 3)
    assert list(plan.columns) == PLAN_COLUMNS
    pd.testing.assert_frame_equal(plan, synth.plan_cohort(40, 3))
    assert not plan.equals(synth.plan_cohort(40, 4))
    assert all(re.fullmatch(IXI_SUBJECT, subject) for subject in plan["subject"])
    assert (plan["subject"] == [f"IXI{i:03d}" for i in plan["ixi_id"]]).all()
    assert plan["ixi_id"].iloc[0] <= 4
    assert plan["ixi_id"].is_monotonic_increasing and plan["ixi_id"].is_unique
    assert (np.diff(plan["ixi_id"]) > 1).any(), "IXI ids have gaps"
    assert plan["imaged"].sum() == 40


@pytest.mark.parametrize("n_subjects", [12, 40, 150])
def test_plan_has_every_quirk_from_twelve_subjects(n_subjects: int) -> None:
    plan = synth.plan_cohort(n_subjects, 5)
    imaged = plan[plan["imaged"]]
    statuses = Counter(imaged["sheet_status"])
    for status in ("ok", "zero_duplicate", "conflicting_age", "no_age", "absent"):
        assert statuses[status] >= 1, status
    assert statuses["absent"] == 1
    assert 1 <= statuses["conflicting_age"] <= 2
    assert (~imaged["has_mra"]).sum() >= 1
    assert (~plan["imaged"]).sum() >= 1, "sheet-only ids"
    assert not plan.loc[~plan["imaged"], "has_mra"].any()


def test_plan_is_ixi_like_and_mostly_usable() -> None:
    plan = synth.plan_cohort(300, 8)
    imaged = plan[plan["imaged"]]
    usable = imaged["has_mra"] & imaged["sheet_status"].isin(["ok", "zero_duplicate"])
    assert usable.mean() > 0.85
    assert imaged["age"].between(20, 86).all()
    assert 44 < imaged["age"].mean() < 55 and 13 < imaged["age"].std() < 20
    assert (imaged["age"] > 75).mean() < (imaged["age"] < 30).mean(), "fewer at the old end"
    assert (imaged["age"] % 1 != 0).any(), "ages carry decimals"
    assert abs((imaged["bio_age"] - imaged["age"]).std() - 3.0) < 0.6
    shares = imaged["site"].value_counts(normalize=True)
    assert shares["Guys"] > shares["HH"] > shares["IOP"] > 0.05
    assert set(plan["sex"]) == {1, 2}
    assert plan["series"].between(0, 9999).all()


def test_subject_files_follow_ixi_naming() -> None:
    row = {"subject": "IXI002", "site": "Guys", "series": 828, "has_mra": True}
    assert synth.subject_files(row) == {
        "T1": "IXI-T1/IXI002-Guys-0828-T1.nii.gz",
        "PD": "IXI-PD/IXI002-Guys-0828-PD.nii.gz",
        "MRA": "IXI-MRA/IXI002-Guys-0828-MRA.nii.gz",
    }
    assert set(synth.subject_files({**row, "has_mra": False})) == {"T1", "PD"}


# ---------------------------------------------------------------------------------------------
# Spreadsheet and ground-truth table
# ---------------------------------------------------------------------------------------------


def read_sheet(path: Path) -> tuple[xlrd.book.Book, list[list[xlrd.sheet.Cell]]]:
    book = xlrd.open_workbook(path)
    assert book.sheet_names() == ["Table", "Ethnicity", "Marital Status", "Occupation", "Qualification", "Study Date"]
    table = book.sheet_by_name("Table")
    return book, [table.row(r) for r in range(1, table.nrows)]


def test_spreadsheet_reproduces_the_real_quirks(dataset: Dataset) -> None:
    book, rows = read_sheet(dataset.raw / "IXI.xls")
    assert [cell.value for cell in book.sheet_by_name("Table").row(0)] == IXI_SHEET_HEADER
    plan = dataset.plan.set_index("ixi_id")
    status = plan["sheet_status"]
    ids = [int(row[0].value) for row in rows]
    assert ids == sorted(ids)
    in_sheet = plan.index[status != "absent"]
    doubled = plan.index[status.isin(["zero_duplicate", "conflicting_age"])]
    assert len(rows) == len(in_sheet) + len(doubled)
    assert set(ids) == set(in_sheet)
    assert {i for i, n in Counter(ids).items() if n > 1} == set(doubled)
    absent = plan.index[status == "absent"]
    assert len(absent) == 1 and plan.loc[absent[0], "imaged"] and absent[0] not in ids
    assert set(plan.index[~plan["imaged"]]) <= set(ids), "sheet-only ids are in the sheet"

    by_id: dict[int, list[list[xlrd.sheet.Cell]]] = {}
    for row in rows:
        by_id.setdefault(int(row[0].value), []).append(row)
    for ixi_id in plan.index[status == "zero_duplicate"]:
        complete, zeroed = by_id[ixi_id]
        assert [cell.value for cell in zeroed[2:8]] == [0.0] * 6
        assert zeroed[11].value == complete[11].value and zeroed[8].value == complete[8].value
    for ixi_id in plan.index[status == "conflicting_age"]:
        first, second = by_id[ixi_id]
        assert first[11].ctype == second[11].ctype == xlrd.XL_CELL_NUMBER
        assert first[11].value != second[11].value
    for ixi_id in plan.index[status == "no_age"]:
        (row,) = by_id[ixi_id]
        assert row[11].ctype == xlrd.XL_CELL_TEXT and row[11].value == ""


def test_spreadsheet_ages_follow_dates_and_match_the_plan(dataset: Dataset) -> None:
    book, rows = read_sheet(dataset.raw / "IXI.xls")
    plan = dataset.plan.set_index("ixi_id")
    seen: set[int] = set()
    for row in rows:
        ixi_id = int(row[0].value)
        if row[11].ctype != xlrd.XL_CELL_NUMBER:
            assert row[9].value in (0.0, 1.0)
            continue
        assert row[10].ctype == xlrd.XL_CELL_DATE
        if row[8].ctype == xlrd.XL_CELL_TEXT:
            birth = pd.Timestamp(row[8].value)
        else:  # the real sheet has a DOB stored as a date cell, too
            birth = EXCEL_EPOCH + pd.Timedelta(days=row[8].value)
        study = EXCEL_EPOCH + pd.Timedelta(days=row[10].value)
        assert row[11].value == pytest.approx((study - birth).days / 365.25, abs=1e-9)
        if ixi_id not in seen:  # the first row of an id is the complete, true one
            assert row[11].value == pytest.approx(plan.loc[ixi_id, "age"], abs=1e-9)
        seen.add(ixi_id)
    dates = book.sheet_by_name("Study Date")
    assert [dates.cell_value(0, c) for c in range(2)] == ["ixi_id", "study_date"]
    assert all(dates.cell(r, 1).ctype == xlrd.XL_CELL_DATE for r in range(1, dates.nrows))


def test_ground_truth_table_lists_imaged_subjects(dataset: Dataset) -> None:
    table = pd.read_csv(dataset.root / "ground_truth.csv", dtype={"subject": str})
    assert list(table.columns) == ["subject", "age", "bio_age", "has_mra", "sheet_status"]
    assert list(table["subject"]) == list(dataset.imaged["subject"])
    assert np.allclose(table["age"], dataset.imaged["age"], atol=1e-3)


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------


def test_layout_matches_the_plan(dataset: Dataset) -> None:
    expected = {"IXI.xls"}
    for _, row in dataset.imaged.iterrows():
        expected |= set(synth.subject_files(row).values())
        assert (dataset.truth / f"{row['subject']}.json").is_file()
    written = {str(path.relative_to(dataset.raw)) for path in dataset.raw.rglob("*") if path.is_file()}
    assert written == expected, "exactly the planned files, and no temporary leftovers"
    assert {path.parent.name for path in dataset.raw.rglob("*.nii.gz")} == {"IXI-T1", "IXI-PD", "IXI-MRA"}
    truth_files = {path.stem for path in dataset.truth.glob("*.json")}
    assert truth_files == set(dataset.imaged["subject"])


def test_assembled_folder_holds_every_planned_image_read_only(dataset: Dataset, tmp_path: Path) -> None:
    # Every subject's images are in the one raw folder here, as if each had its own folder.
    count = synth.assemble_dataset(
        dict.fromkeys(dataset.imaged["subject"], dataset.raw), dataset.plan, tmp_path / "IXI"
    )
    expected = {relative for _, row in dataset.imaged.iterrows() for relative in synth.subject_files(row).values()}
    written = {str(path.relative_to(tmp_path / "IXI")) for path in (tmp_path / "IXI").rglob("*") if path.is_file()}
    assert written == expected and count == len(expected)
    assert all((tmp_path / "IXI" / relative).stat().st_mode & 0o222 == 0 for relative in expected)
    assert [path.name for path in tmp_path.iterdir()] == ["IXI"], "no staging folder left"


def test_images_have_ixi_headers_and_geometry(dataset: Dataset) -> None:
    row = dataset.with_mra.iloc[0]
    for modality, (matrix, spacing) in IXI_GEOMETRY.items():
        image = dataset.image(row, modality)
        data = np.asanyarray(image.dataobj)
        assert image.header.get_data_dtype() == np.int16 and data.dtype == np.int16
        assert data.ndim == 3 and np.isfinite(data).all() and data.max() > 0
        assert image.shape == tuple(max(8, round(n * SCALE)) for n in matrix)
        assert np.allclose(sorted(image.header.get_zooms()), sorted(np.asarray(spacing) / SCALE))
        assert abs(np.linalg.det(image.affine[:3, :3])) > 1e-3
        assert int(image.header["qform_code"]) == int(image.header["sform_code"]) == 1
        assert np.allclose(image.get_qform(), image.get_sform())
    assert nib.aff2axcodes(dataset.image(row, "T1").affine) != ("R", "A", "S")
    assert nib.aff2axcodes(dataset.image(row, "PD").affine)[2] in ("S", "I"), "PD is axial"


def test_mra_is_a_low_slab_not_centred_on_the_head(dataset: Dataset) -> None:
    for _, row in dataset.with_mra.iloc[:5].iterrows():
        pd_image = dataset.image(row, "PD")
        data = np.asanyarray(pd_image.dataobj)
        head_centre = scanner_points(pd_image)[head_foreground(data).ravel()].mean(axis=0)
        mra = dataset.image(row, "MRA")
        corners = np.array([[0, 0, 0], np.asarray(mra.shape) - 1])
        z_range = np.sort((corners @ mra.affine[:3, :3].T + mra.affine[:3, 3])[:, 2])
        assert 70 < z_range[1] - z_range[0] < 90, "an ~80 mm axial slab"
        assert z_range.mean() < head_centre[2] - 8, "the slab sits low, over the circle of Willis"


def test_fixed_seed_reproduces_bytes_and_another_seed_differs(dataset: Dataset, tmp_path: Path) -> None:
    row = dataset.with_mra.iloc[1]
    name = f"{row['subject']}.json"
    synth.synthesize_subject(row, tmp_path / "same", tmp_path / "same_truth" / name, SCALE, SEED)
    synth.synthesize_subject(row, tmp_path / "other", tmp_path / "other_truth" / name, SCALE, SEED + 1)
    for relative in synth.subject_files(row).values():
        original = (dataset.raw / relative).read_bytes()
        assert (tmp_path / "same" / relative).read_bytes() == original
        assert (tmp_path / "other" / relative).read_bytes() != original
    assert (tmp_path / "same_truth" / name).read_bytes() == (dataset.truth / name).read_bytes()


def test_truth_json_holds_the_subject_and_rigid_poses(dataset: Dataset) -> None:
    row = dataset.with_mra.iloc[2]
    truth = json.loads((dataset.truth / f"{row['subject']}.json").read_text())
    assert truth["subject"] == row["subject"] and truth["site"] == row["site"] and truth["sex"] == row["sex"]
    assert truth["age"] == pytest.approx(row["age"]) and truth["bio_age"] == pytest.approx(row["bio_age"])
    poses = {modality: np.asarray(truth["head_to_scanner"][modality]) for modality in ("T1", "PD", "MRA")}
    for pose in poses.values():
        assert pose.shape == (4, 4) and np.allclose(pose[3], [0, 0, 0, 1])
        assert np.allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3), atol=1e-9), "rigid"
        assert np.linalg.det(pose[:3, :3]) == pytest.approx(1.0)
    # The head moved between scans: T1 and MRA must be registered to PD for real.
    relative = np.linalg.inv(poses["PD"]) @ poses["T1"]
    assert not np.allclose(relative, np.eye(4), atol=1e-3)
    angle = np.degrees(np.arccos(np.clip((np.trace(relative[:3, :3]) - 1) / 2, -1, 1)))
    assert angle < 20


def test_template_locator_finds_the_shipped_templates_and_names_a_missing_one() -> None:
    """The one locator that the synthetic anatomy and registration share."""
    for name in (TEMPLATE_T1, TEMPLATE_GM, TEMPLATE_WM):
        assert template_path(name).is_file()
    with pytest.raises(FileNotFoundError, match=re.escape("no_such_template.nii.gz")):
        template_path("no_such_template.nii.gz")


def test_head_to_scanner_maps_the_template_brain_onto_the_image(dataset: Dataset) -> None:
    """The template WM centroid, mapped through head_to_scanner, lands on the image's bright WM."""
    wm = nib.load(template_path(TEMPLATE_WM))
    wm_voxels = np.argwhere(np.asanyarray(wm.dataobj) > 200)
    wm_centre_head = wm_voxels.mean(axis=0) @ wm.affine[:3, :3].T + wm.affine[:3, 3]
    errors = []
    for _, row in dataset.imaged.iterrows():
        image = dataset.image(row, "T1")
        data = np.asanyarray(image.dataobj).astype(float).ravel()
        bright = data > 1.25 * np.median(data[head_foreground(data)])
        image_centre = scanner_points(image)[bright].mean(axis=0)
        pose = dataset.head_to_scanner(row["subject"], "T1")
        errors.append(np.linalg.norm(pose[:3, :3] @ wm_centre_head + pose[:3, 3] - image_centre))
    assert np.median(errors) < 4.0
    assert max(errors) < 12.0


def test_head_to_scanner_convention_beats_a_perturbed_pose(dataset: Dataset) -> None:
    """Intensity at scanner x is the anatomy at inv(head_to_scanner) @ x: checked against the template."""
    template = nib.load(template_path(TEMPLATE_T1))
    template_data = np.asanyarray(template.dataobj).astype(float)
    row = dataset.with_mra.iloc[3]
    image = dataset.image(row, "T1")
    data = np.asanyarray(image.dataobj).astype(float).ravel()
    pose = dataset.head_to_scanner(row["subject"], "T1")

    def agreement(head_to_scanner: np.ndarray) -> float:
        scanner_to_template = np.linalg.inv(template.affine) @ np.linalg.inv(head_to_scanner)
        coords = scanner_points(image) @ scanner_to_template[:3, :3].T + scanner_to_template[:3, 3]
        expected = ndimage.map_coordinates(template_data, coords.T, order=1)
        return float(np.corrcoef(expected, data)[0, 1])

    shifted = pose.copy()
    shifted[:3, 3] += 6.0
    assert agreement(pose) > 0.6
    assert agreement(pose) > agreement(shifted) + 0.05
    assert agreement(pose) > agreement(np.linalg.inv(pose)) + 0.05


# ---------------------------------------------------------------------------------------------
# Age signal
# ---------------------------------------------------------------------------------------------


def central_bright_csf(image: nib.Nifti1Image) -> int:
    """Bright (CSF) PD voxels in a box at the head's centre, measured in scanner space.

    The threshold is relative to the box's dark end (white matter), so site gain cancels.
    """
    data = np.asanyarray(image.dataobj).astype(float).ravel()
    points = scanner_points(image)
    offset = points - points[head_foreground(data)].mean(axis=0)
    box = (np.abs(offset[:, 0]) < 25) & (np.abs(offset[:, 1]) < 30) & (np.abs(offset[:, 2]) < 20)
    return int(np.sum(box & (data > 1.35 * np.percentile(data[box], 20))))


def test_ventricle_volume_in_pd_rises_with_age(dataset: Dataset) -> None:
    rows = dataset.imaged
    assert rows["age"].max() - rows["age"].min() > 40, "the cohort spans the age range"
    csf = [central_bright_csf(dataset.image(row, "PD")) for _, row in rows.iterrows()]
    assert np.corrcoef(rows["age"], csf)[0, 1] > 0.7


def test_mra_vessel_voxels_fall_with_age(dataset: Dataset) -> None:
    rows = dataset.with_mra
    counts = []
    for _, row in rows.iterrows():
        data = np.asanyarray(dataset.image(row, "MRA").dataobj).astype(float)
        # Vessels are several times brighter than the saturated background tissue.
        counts.append(int(np.sum(data > 3.0 * np.median(data[head_foreground(data)]))))
    assert np.corrcoef(rows["age"], counts)[0, 1] < -0.3


def test_vessel_tree_loses_small_vessels_and_signal_with_age() -> None:
    shape = (50, 90, 36)  # the whole brain from the skull base up, at 2 x 2 x 3 mm
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    affine[:3, 3] = (-49.0, -105.0, -45.0)
    distal = np.arange(shape[2]) * affine[2, 2] + affine[2, 3] > 20.0  # far above the circle of Willis
    ages = np.repeat([20.0, 40.0, 60.0, 80.0], 4)
    counts, distal_peaks = [], []
    for index, age in enumerate(ages):
        mask, signal = synth.vessel_tree(shape, affine, age, np.random.default_rng(index))
        counts.append(mask.sum())
        # The peak, not the mean: the mean rises as dim small vessels are pruned.
        distal_peaks.append(signal[:, :, distal].max())
    assert np.corrcoef(ages, counts)[0, 1] < -0.7
    assert np.corrcoef(ages, distal_peaks)[0, 1] < -0.7


def test_vessel_tree_is_a_deterministic_mask_and_signal() -> None:
    shape = (40, 44, 18)
    affine = np.array([[-2.2, 0, 0, 44.0], [0, 2.2, 0, -60.0], [0, 0, 3.0, -40.0], [0, 0, 0, 1]])
    mask, signal = synth.vessel_tree(shape, affine, 45.0, np.random.default_rng(1))
    again_mask, again_signal = synth.vessel_tree(shape, affine, 45.0, np.random.default_rng(1))
    assert mask.dtype == bool and signal.dtype == np.float32
    assert mask.shape == signal.shape == shape
    assert signal.min() >= 0.0 and signal.max() <= 1.0
    assert 0 < mask.sum() < 0.1 * mask.size
    assert np.all(signal[mask] > 0)
    assert np.array_equal(mask, again_mask) and np.array_equal(signal, again_signal)
