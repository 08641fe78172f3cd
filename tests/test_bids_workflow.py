"""The workflow on a BIDS dataset (dataset.source: bids): BIDS ids through inventory, split and training.

A small synthetic cohort is written as a BIDS dataset (T1w, PDw and angio under anat/, ages in
participants.tsv), read-only like a lab's own data. Its subjects are relabelled sub-01, sub-02,
..., so nothing downstream can lean on IXI's ids.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from brainage import synth
from brainage.bids import BIDS_SUFFIXES
from conftest import run_snakemake

SEED = 23
N_SUBJECTS = 24
DESCRIPTION = {"Name": "synthetic brain age", "BIDSVersion": "1.9.0"}
# The plan codes sex as IXI's sheet does (1 = male, 2 = female); participants.tsv spells it.
IXI_SEX = {1: "male", 2: "female"}


@pytest.fixture(scope="module")
def bids_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """The dataset's root and its participants (participant_id, age, sex), ages as in the plan."""
    scratch = tmp_path_factory.mktemp("ixi_layout")
    root = tmp_path_factory.mktemp("bids") / "dataset"
    plan = synth.usable_subjects(synth.plan_cohort(N_SUBJECTS, SEED))
    rows = []
    for number, row in enumerate(plan.to_dict("records"), start=1):
        synth.synthesize_subject(row, scratch, scratch / f"{row['subject']}.json", 0.15, SEED)
        label = f"sub-{number:02d}"
        for scan, relative in synth.subject_files(row).items():
            target = root / label / "anat" / f"{label}_{BIDS_SUFFIXES[scan]}.nii.gz"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(scratch / relative, target)
        rows.append({"participant_id": label, "age": round(row["age"], 2), "sex": IXI_SEX[row["sex"]]})
    participants = pd.DataFrame(rows)
    participants.to_csv(root / "participants.tsv", sep="\t", index=False)
    (root / "dataset_description.json").write_text(json.dumps(DESCRIPTION))
    for path in root.rglob("*"):
        path.chmod(0o555 if path.is_dir() else 0o444)
    return root, participants


def _config(root: Path, **dataset) -> dict:
    return {
        "dataset": {"source": "bids", "raw_dir": str(root), **dataset},
        "split": {"eval_size": 4, "tune_size": 2},
        "cross_validation": {"folds": 0},
    }


@pytest.mark.workflow
def test_bids_dataset_runs_through_inventory_split_and_training(bids_dataset, tmp_path: Path) -> None:
    root, participants = bids_dataset
    run = Path("results") / "train" / "T1" / "cnn3d" / "replicate0" / "predictions.csv"
    result = run_snakemake(tmp_path, "--cores", "2", str(run), config=_config(root), timeout=900)
    assert result.returncode == 0, result.stderr[-5000:]
    inventory = pd.read_csv(tmp_path / "results" / "inventory" / "subjects.csv")
    assert sorted(inventory["subject"]) == sorted(participants["participant_id"])
    manifest = pd.read_csv(tmp_path / "results" / "manifest" / "manifest.csv")
    expected_age = participants.set_index("participant_id")["age"]
    assert (manifest["age"].to_numpy() == expected_age.loc[manifest["subject"]].to_numpy()).all()
    assert set(manifest["sex"]) <= {"M", "F"}
    subject = manifest["subject"].iloc[0]
    assert (tmp_path / "results" / "preprocess" / subject / f"{subject}_TOF_reg_PD_bin.nii.gz").exists()
    predictions = pd.read_csv(tmp_path / run)
    assert sorted(predictions["subject"]) == sorted(manifest["subject"])
    assert predictions["predicted"].notna().all()


@pytest.mark.parametrize(
    ("problem", "message"),
    [
        ("participants.tsv without the age column", "participants.tsv: no age column 'age'"),
        ("no dataset_description.json", "dataset_description.json"),
    ],
)
def test_bad_bids_dataset_stops_before_any_job(bids_dataset, tmp_path: Path, problem: str, message: str) -> None:
    source, participants = bids_dataset
    root = tmp_path / "dataset"
    shutil.copytree(source, root)
    if problem == "no dataset_description.json":
        (root / "dataset_description.json").chmod(0o644)
        (root / "dataset_description.json").unlink()
    else:
        (root / "participants.tsv").chmod(0o644)
        participants.drop(columns="age").to_csv(root / "participants.tsv", sep="\t", index=False)
    workdir = tmp_path / "run"
    workdir.mkdir()
    result = run_snakemake(workdir, "-n", config=_config(root), timeout=120)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert not (workdir / "results").exists()


def test_participant_columns_are_configurable(bids_dataset, tmp_path: Path) -> None:
    source, participants = bids_dataset
    root = tmp_path / "dataset"
    shutil.copytree(source, root)
    (root / "participants.tsv").chmod(0o644)
    participants.rename(columns={"age": "age_years"}).to_csv(root / "participants.tsv", sep="\t", index=False)
    columns = {"age": "age_years", "sex": "sex", "site": None}
    workdir = tmp_path / "run"
    workdir.mkdir()
    result = run_snakemake(workdir, "-n", config=_config(root, participants=columns), timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "inventory" in result.stdout
