"""Finding raw IXI images, checking them, and joining them with the demographics sheet."""

from __future__ import annotations

import gzip
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import xlwt

from brainage import inventory
from brainage.inventory import INVENTORY_COLUMNS, InventoryError, build_inventory, check_images, scan_raw


def write_image(path: Path, data: np.ndarray | None = None, sform: np.ndarray | None = None) -> Path:
    """A small NIfTI; ``sform`` is written to the header as is, even if singular."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if data is None:
        data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    header = nib.Nifti1Header()
    header.set_sform(np.eye(4) if sform is None else sform, code=1)
    # No affine argument: nibabel would otherwise rewrite (and reject) a singular sform.
    nib.save(nib.Nifti1Image(data, None, header), path)
    return path


def write_sheet(path: Path, rows: list[tuple[int, int, float | str]]) -> Path:
    """A minimal IXI-style sheet: (IXI_ID, SEX_ID, AGE) rows; "" is an empty AGE cell."""
    book = xlwt.Workbook()
    table = book.add_sheet("Table")
    for c, name in enumerate(["IXI_ID", "SEX_ID (1=m, 2=f)", "AGE"]):
        table.write(0, c, name)
    for r, row in enumerate(rows, start=1):
        for c, value in enumerate(row):
            table.write(r, c, value)
    book.save(str(path))
    return path


def test_scan_raw_finds_files_anywhere(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    t1 = write_image(raw / "IXI-T1" / "IXI002-Guys-0828-T1.nii.gz")
    mra = write_image(raw / "IXI002-Guys-0828-MRA.nii.gz")  # extracted flat
    pd_ = write_image(raw / "deep" / "er" / "IXI012-HH-1211-PD.nii.gz")
    write_image(raw / "IXI-T1" / "notes-T1.nii.gz")  # not an IXI name: ignored
    files = scan_raw(raw)
    assert list(files.columns) == ["subject", "site", "path_T1", "path_PD", "path_MRA"]
    assert files["subject"].tolist() == ["IXI002", "IXI012"]
    first, second = files.iloc[0], files.iloc[1]
    assert first["site"] == "Guys"
    assert first["path_T1"] == str(t1.resolve()) and first["path_MRA"] == str(mra.resolve())
    assert first["path_PD"] == ""
    assert second["site"] == "HH" and second["path_PD"] == str(pd_.resolve())


def test_scan_raw_refuses_duplicate_images(tmp_path: Path) -> None:
    write_image(tmp_path / "IXI-T1" / "IXI002-Guys-0828-T1.nii.gz")
    write_image(tmp_path / "IXI002-Guys-0828-T1.nii.gz")
    with pytest.raises(InventoryError, match="IXI002: T1 image found twice"):
        scan_raw(tmp_path)


def test_check_images_reports_each_fault(tmp_path: Path) -> None:
    good = write_image(tmp_path / "good.nii.gz")
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(write_image(tmp_path / "whole.nii.gz").read_bytes()[:200])
    empty = tmp_path / "empty.nii.gz"
    empty.write_bytes(b"")
    four_d = write_image(tmp_path / "4d.nii.gz", np.ones((3, 3, 3, 2), np.float32))
    nan_data = np.ones((3, 3, 3), np.float32)
    nan_data[1, 1, 1] = np.nan
    with_nan = write_image(tmp_path / "nan.nii.gz", nan_data)
    singular = write_image(tmp_path / "singular.nii.gz", sform=np.diag([1.0, 1.0, 0.0, 1.0]))
    files = pd.DataFrame(
        {
            "subject": ["IXI001", "IXI002", "IXI003", "IXI004", "IXI005", "IXI006", "IXI007"],
            "path_T1": [str(good), str(truncated), str(empty), str(four_d), str(with_nan), str(singular), str(good)],
            # IXI007's MRA is bad; NaN is how an empty path reads back from CSV.
            "path_MRA": [str(good), str(good), str(good), "", np.nan, str(good), str(truncated)],
        }
    )
    problems = check_images(files, ["T1", "MRA"], threads=2)
    reasons = dict(zip(problems["subject"], problems["reason"], strict=True))
    assert set(reasons) == {"IXI002", "IXI003", "IXI004", "IXI005", "IXI006", "IXI007"}
    assert reasons["IXI002"].startswith(f"bad T1 image {truncated}: cannot be read")
    assert reasons["IXI003"] == f"bad T1 image {empty}: file is empty (0 bytes)"
    assert "4D" in reasons["IXI004"]
    assert "NaN" in reasons["IXI005"]
    assert "affine is singular" in reasons["IXI006"]
    assert reasons["IXI007"].startswith(f"bad MRA image {truncated}")


def test_gzip_stream_cut_short_is_caught(tmp_path: Path) -> None:
    # A download cut off mid-stream: the header decodes, the voxels do not.
    whole = write_image(tmp_path / "whole.nii.gz", np.random.default_rng(0).random((20, 20, 20)).astype(np.float32))
    raw = gzip.decompress(whole.read_bytes())
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(gzip.compress(raw)[: len(raw) // 3])
    problems = check_images(pd.DataFrame({"subject": ["IXI009"], "path_T1": [str(cut)]}), ["T1"], threads=1)
    assert problems["reason"].iloc[0].startswith(f"bad T1 image {cut}: cannot be read")


def test_build_inventory(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    for subject in ["IXI002-Guys-0828", "IXI012-HH-1211", "IXI013-HH-1212", "IXI014-IOP-0001", "IXI015-Guys-0002"]:
        write_image(raw / "IXI-T1" / f"{subject}-T1.nii.gz")
    for subject in ["IXI002-Guys-0828", "IXI012-HH-1211", "IXI013-HH-1212", "IXI015-Guys-0002"]:
        write_image(raw / "IXI-MRA" / f"{subject}-MRA.nii.gz")
    (raw / "IXI-MRA" / "IXI015-Guys-0002-MRA.nii.gz").write_bytes(b"")  # bad image
    write_image(raw / "IXI-T1" / "IXI099-HH-0003-T1.nii.gz")  # not in the sheet
    write_image(raw / "IXI-MRA" / "IXI099-HH-0003-MRA.nii.gz")
    sheet = write_sheet(
        tmp_path / "ixi.xls",
        [(2, 1, 35.5), (12, 2, 40.25), (13, 1, ""), (14, 2, 50.0), (15, 1, 60.0), (20, 2, 70.0), (21, 2, "")],
    )
    subjects, exclusions = build_inventory(raw, sheet, ["T1", "MRA"], threads=2)
    assert list(subjects.columns) == INVENTORY_COLUMNS
    assert subjects["subject"].tolist() == [
        "IXI002",
        "IXI012",
        "IXI013",
        "IXI014",
        "IXI015",
        "IXI020",
        "IXI021",
        "IXI099",
    ]
    assert subjects.loc[subjects["included"], "subject"].tolist() == ["IXI002", "IXI012"]
    included = subjects[subjects["included"]]
    assert (included["reason"] == "").all()
    assert included["age"].tolist() == [35.5, 40.25] and included["sex"].tolist() == ["M", "F"]
    assert included["site"].tolist() == ["Guys", "HH"]
    reasons = dict(zip(exclusions["subject"], exclusions["reason"], strict=True))
    assert reasons["IXI013"] == "no age in demographics sheet"
    assert reasons["IXI014"] == "missing required modality MRA"
    assert reasons["IXI015"].startswith("bad MRA image") and "file is empty" in reasons["IXI015"]
    assert reasons["IXI020"] == "no images"
    assert reasons["IXI021"] == "no age in demographics sheet; no images"
    assert reasons["IXI099"] == "absent from the demographics sheet"
    assert list(exclusions.columns) == ["subject", "reason"]
    assert len(exclusions) == (~subjects["included"]).sum()
    sheet_only = subjects.set_index("subject").loc["IXI020"]
    assert sheet_only["path_T1"] == "" and sheet_only["site"] == ""


def test_lying_headers_are_excluded_without_allocating_their_claims(tmp_path: Path) -> None:
    """Two ~100-byte files claiming 1 GB and 216 MB, checked by two threads at once, cost megabytes."""
    claims = {1000: "header declares 1000000000 voxels", 600: "header declares 216000352 bytes"}
    paths = []
    for side in claims:
        header = nib.Nifti1Header()
        header.set_data_dtype(np.uint8)
        header.set_data_shape((side, side, side))
        header.set_sform(np.eye(4), code=1)
        header["vox_offset"] = 352
        paths.append(tmp_path / f"claim{side}.nii.gz")
        paths[-1].write_bytes(gzip.compress(header.binaryblock + b"\0" * 4 + b"\1" * 64))
    files = pd.DataFrame({"subject": ["IXI001", "IXI002"], "path_T1": [str(p) for p in paths]})
    tracemalloc.start()
    try:
        problems = check_images(files, ["T1"], threads=2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 * 2**20
    assert len(problems) == 2
    for path, claim, reason in zip(paths, claims.values(), problems["reason"], strict=True):
        assert reason.startswith(f"bad T1 image {path}: {claim}")


def test_one_bad_image_never_stops_the_inventory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unsupported type and an unexpected exception each exclude their own subject, naming the file."""
    good = write_image(tmp_path / "good.nii.gz")
    rgb_data = np.zeros((4, 4, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb_data["G"] = 7
    rgb = tmp_path / "rgb.nii.gz"
    nib.save(nib.Nifti1Image(rgb_data, np.eye(4)), rgb)
    odd = write_image(tmp_path / "odd.nii.gz")
    real_load = inventory.load_image

    def load_or_fail(path: str, subject: str | None = None) -> nib.Nifti1Image:
        if path == str(odd):
            raise RuntimeError("something nobody foresaw")
        return real_load(path, subject)

    monkeypatch.setattr(inventory, "load_image", load_or_fail)
    files = pd.DataFrame({"subject": ["IXI001", "IXI002", "IXI003"], "path_T1": [str(good), str(rgb), str(odd)]})
    reasons = dict(check_images(files, ["T1"], threads=2).itertuples(index=False))
    assert set(reasons) == {"IXI002", "IXI003"}
    assert reasons["IXI002"] == (
        f"bad T1 image {rgb}: data type RGB is not supported (expected real integer or float voxels)"
    )
    assert reasons["IXI003"] == f"bad T1 image {odd}: cannot be checked (RuntimeError: something nobody foresaw)"
