"""Bad input on config/ixi.yaml's code path with existing raw data: explained, excluded, never written.

A small synthetic cohort in IXI's layout serves as the user's raw folder (read-only); a few of its
images are broken the ways real files break. The workflow must exclude exactly those subjects,
with a reason naming the file, finish the others, and never write into the raw folder.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainage import synth
from conftest import ROOT, run_snakemake

SEED = 17
N_SUBJECTS = 36


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _break(path: Path, how: str) -> None:
    image = nib.load(path)
    data = np.asanyarray(image.dataobj)
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "4D":
        nib.save(nib.Nifti1Image(np.stack([data, data], axis=-1), image.affine), path)
    elif how == "2D":
        nib.save(nib.Nifti1Image(data[:, :, data.shape[2] // 2], image.affine), path)
    elif how == "NaN":
        nib.save(nib.Nifti1Image(np.full(data.shape, np.nan, np.float32), image.affine), path)
    elif how == "singular":
        # Written field by field: nibabel refuses to set a singular affine through its API.
        header = image.header.copy()
        header["qform_code"], header["sform_code"] = 0, 1
        header["srow_z"] = [0.0, 0.0, 0.0, 0.0]
        nib.save(nib.Nifti1Image(data, None, header), path)


BROKEN = {
    "truncated": ("T1", "cannot be read"),
    "empty": ("PD", "empty (0 bytes)"),
    "4D": ("MRA", "4D"),
    "2D": ("T1", "2D"),
    "NaN": ("PD", "NaN"),
    "singular": ("T1", "singular"),
}


@pytest.fixture(scope="module")
def raw_cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, pd.DataFrame, dict[str, str]]:
    """Raw folder, sheet, plan, and {subject: expected reason fragment} for the broken subjects."""
    root = tmp_path_factory.mktemp("user_data")
    raw = root / "IXI"
    plan = synth.plan_cohort(N_SUBJECTS, SEED)
    for row in plan[plan["imaged"]].to_dict("records"):
        synth.synthesize_subject(row, raw, root / "truth" / f"{row['subject']}.json", 0.15, SEED)
    synth.write_demographics(plan, root / "IXI.xls", SEED)
    usable = synth.usable_subjects(plan)
    expected = {}
    # The first len(BROKEN) usable subjects are broken, one way each; the rest stay intact.
    for row, (how, (modality, reason)) in zip(usable.to_dict("records"), BROKEN.items(), strict=False):
        path = raw / synth.subject_files(row)[modality]
        _break(path, how)
        expected[row["subject"]] = (path.name, reason)
    for path in raw.rglob("*"):
        path.chmod(0o555 if path.is_dir() else 0o444)
    raw.chmod(0o555)
    return raw, root / "IXI.xls", plan, expected


def _config(raw: Path, sheet_path: Path, **dataset: str) -> dict:
    return {
        "dataset": {
            "source": "ixi",
            "download": False,
            "raw_dir": str(raw),
            "demographics": str(sheet_path),
            **dataset,
        },
        "preprocessing": {"grid": {"shape": [24, 28, 24], "spacing": 6.5}},
        "split": {"eval_size": 4, "tune_size": 2},
    }


@pytest.mark.workflow
def test_broken_images_and_sheet_quirks_exclude_only_their_subjects(raw_cohort, tmp_path: Path) -> None:
    raw, sheet, plan, expected = raw_cohort
    before = _snapshot(raw)
    result = run_snakemake(
        tmp_path,
        "--cores",
        "2",
        "results/split/split.csv",
        base_configs=(ROOT / "config" / "ixi.yaml",),
        config=_config(raw, sheet),
    )
    assert result.returncode == 0, result.stderr[-5000:]
    exclusions = pd.read_csv(tmp_path / "results" / "manifest" / "exclusions.csv").set_index("subject")["reason"]
    for subject, (file_name, reason) in expected.items():
        assert file_name in exclusions[subject] and reason in exclusions[subject], exclusions[subject]
    quirks = {
        "absent": "absent from the demographics sheet",
        "no_age": "no age",
        "conflicting_age": "conflicting ages",
    }
    for status, reason in quirks.items():
        for subject in plan.loc[plan["imaged"] & (plan["sheet_status"] == status), "subject"]:
            assert reason in exclusions[subject]
    for subject in plan.loc[plan["imaged"] & ~plan["has_mra"], "subject"]:
        assert "missing required modality MRA" in exclusions[subject]

    manifest = pd.read_csv(tmp_path / "results" / "manifest" / "manifest.csv")
    assert not set(manifest["subject"]) & set(exclusions.index)
    assert set(manifest["subject"]) <= set(synth.usable_subjects(plan)["subject"]) - set(expected)
    assert _snapshot(raw) == before


@pytest.mark.parametrize(
    ("problem", "dataset", "message"),
    [
        ("no AGE column", {}, "AGE"),
        ("wrong sheet", {"sheet": "Participants"}, "Participants"),
    ],
)
def test_bad_demographics_sheet_stops_before_any_job(
    raw_cohort, tmp_path: Path, problem: str, dataset: dict, message: str
) -> None:
    raw, sheet, _, _ = raw_cohort
    if problem == "no AGE column":
        broken = tmp_path / "IXI.csv"
        pd.DataFrame({"IXI_ID": [2, 12], "SEX_ID (1=m, 2=f)": [1, 2]}).to_csv(broken, index=False)
        sheet = broken
    result = run_snakemake(
        tmp_path, "-n", base_configs=(ROOT / "config" / "ixi.yaml",), config=_config(raw, sheet, **dataset)
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert str(sheet) in output and message in output
    assert not (tmp_path / "results").exists()
