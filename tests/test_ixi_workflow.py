"""config/ixi.yaml's code path end to end: download from a local server, verify, extract, run.

The archives are built from a small synthetic cohort in IXI's layout (flat .nii.gz members) and
served on 127.0.0.1; the workflow downloads, checks the MD5s, extracts read-only and runs the
study up to the split, scaled down by the tiny config. The raw folder is never written.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path

import pandas as pd
import pytest

from brainage import ixi, synth
from conftest import ROOT, run_snakemake
from http_server import Served

SEED = 11
N_SUBJECTS = 28


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _publish_ixi(server: Served, staging: Path) -> Path:
    """Build IXI-{T1,PD,MRA}.tar and IXI.xls on the server; return a file table pointing at it."""
    plan = synth.plan_cohort(N_SUBJECTS, SEED)
    for row in plan[plan["imaged"]].to_dict("records"):
        synth.synthesize_subject(row, staging, staging / "truth" / f"{row['subject']}.json", 0.15, SEED)
    rows = []
    for modality in ("T1", "PD", "MRA"):
        archive = server.root / f"IXI-{modality}.tar"
        with tarfile.open(archive, "w") as tar:
            for image in sorted((staging / f"IXI-{modality}").glob("*.nii.gz")):
                tar.add(image, arcname=image.name)
        rows.append((archive.name, archive.stat().st_size))
    synth.write_demographics(plan, server.root / "IXI.xls", SEED)
    rows.append(("IXI.xls", (server.root / "IXI.xls").stat().st_size))
    table = staging / "ixi_files.tsv"
    pd.DataFrame(
        [
            {
                "name": name,
                "url": f"{server.url}/files/{name}",
                "md5": _md5(server.root / name),
                "size_bytes": size,
                "note": "test",
            }
            for name, size in rows
        ]
    ).to_csv(table, sep="\t", index=False)
    return table


@pytest.mark.workflow
def test_ixi_config_downloads_verifies_extracts_and_runs(server: Served, tmp_path: Path) -> None:
    table = _publish_ixi(server, tmp_path / "staging")
    workdir = tmp_path / "run"
    workdir.mkdir()
    override = {
        "dataset": {"file_table": str(table)},
        "preprocessing": {"grid": {"shape": [24, 28, 24], "spacing": 6.5}},
        # About 20 of the 28 subjects are usable after the sheet quirks and QC.
        "split": {"eval_size": 6, "tune_size": 3},
    }
    result = run_snakemake(
        workdir,
        "--cores",
        "2",
        "results/split/split.csv",
        base_configs=(ROOT / "config" / "ixi.yaml",),
        config=override,
    )
    assert result.returncode == 0, result.stderr[-5000:]

    downloads = workdir / "results" / "ixi" / "downloads"
    for name in ("IXI-T1.tar", "IXI-PD.tar", "IXI-MRA.tar", "IXI.xls"):
        assert _md5(downloads / name) == _md5(server.root / name)
    raw = workdir / "results" / "ixi" / "raw"
    images = sorted(raw.glob("IXI-*/*.nii.gz"))
    assert len(images) == sum(1 for _ in (tmp_path / "staging").glob("IXI-*/*.nii.gz"))
    assert all(image.stat().st_mode & 0o222 == 0 for image in images)
    before = {image: _md5(image) for image in images}

    split = pd.read_csv(workdir / "results" / "split" / "split.csv")
    assert (split["set"] == "eval").sum() == 6
    exclusions = pd.read_csv(workdir / "results" / "manifest" / "exclusions.csv")
    assert exclusions["reason"].str.contains("missing required modality MRA").any()

    # Nothing was written into the raw folder by any stage after extraction.
    assert {image: _md5(image) for image in sorted(raw.glob("IXI-*/*.nii.gz"))} == before
    # A rerun plans nothing, and downloads nothing again.
    requests = len(server.requests)
    again = run_snakemake(
        workdir, "-n", "results/split/split.csv", base_configs=(ROOT / "config" / "ixi.yaml",), config=override
    )
    assert "Nothing to be done" in again.stdout + again.stderr
    assert len(server.requests) == requests


def test_dry_run_plans_the_real_study_without_network(tmp_path: Path) -> None:
    result = run_snakemake(tmp_path, "-n", base_configs=(ROOT / "config" / "ixi.yaml",))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "download_ixi" in result.stdout and "extract_ixi" in result.stdout


# ---------------------------------------------------------------------------------------------
# A user's raw folder is never written or deleted, whatever dataset.download says


def _checksums(folder: Path) -> dict[str, str]:
    return {str(path.relative_to(folder)): _md5(path) for path in sorted(folder.rglob("*")) if path.is_file()}


def _user_folder(folder: Path) -> dict[str, str]:
    """A user's IXI folder, read-only as an only copy should be; return its checksums."""
    for modality in ("T1", "PD", "MRA"):
        image = folder / f"IXI-{modality}" / f"IXI002-Guys-0828-{modality}.nii.gz"
        image.parent.mkdir(parents=True)
        image.write_bytes(os.urandom(1000))
        image.chmod(0o444)
    return _checksums(folder)


@pytest.mark.parametrize(
    ("download", "raw_dir", "exists", "refusal"),
    [
        (True, "mine", True, "already exists and is not a folder this workflow extracted"),
        (True, "../mine", True, "not inside the working directory"),
        (True, "../mine", False, "not inside the working directory"),
        (True, "/etc", True, "not inside the working directory"),
        (False, "mine", True, None),
        (False, "../mine", True, None),
        (False, "mine", False, None),
    ],
    ids=[
        "download-inside",
        "download-outside",
        "download-outside-new",
        "download-etc",
        "read-inside",
        "read-outside",
        "read-new",
    ],
)
def test_user_raw_folder_survives_byte_for_byte(
    tmp_path: Path, download: bool, raw_dir: str, exists: bool, refusal: str | None
) -> None:
    workdir = tmp_path / "run"
    workdir.mkdir()
    folder = Path(raw_dir) if Path(raw_dir).is_absolute() else workdir / raw_dir
    before = _user_folder(folder) if exists and raw_dir != "/etc" else None
    result = run_snakemake(
        workdir,
        "-n",
        base_configs=(ROOT / "config" / "ixi.yaml",),
        config={"dataset": {"download": download, "raw_dir": raw_dir}},
        timeout=120,
    )
    output = result.stdout + result.stderr
    if refusal is None:
        # Read-only use: whatever else the dry run lacks (here the sheet), the folder is no output.
        assert "config key 'dataset.raw_dir'" not in output
        assert "extract_ixi" not in output
    else:
        assert result.returncode != 0
        assert f"config key 'dataset.raw_dir': '{raw_dir}'" in output and refusal in output, output[-3000:]
    if before is not None:
        assert _checksums(folder) == before
    else:
        assert exists or not folder.exists()


def _publish_archives(server: Served, staging: Path) -> Path:
    """Tiny IXI-{T1,PD,MRA}.tar of placeholder images on the server; return their file table."""
    staging.mkdir()
    rows = []
    for modality in ("T1", "PD", "MRA"):
        archive = server.root / f"IXI-{modality}.tar"
        with tarfile.open(archive, "w") as tar:
            for ixi_id in (2, 12):
                image = staging / f"IXI{ixi_id:03d}-Guys-{828 + ixi_id:04d}-{modality}.nii.gz"
                image.write_bytes(os.urandom(500))
                tar.add(image, arcname=image.name)
        rows.append(
            {
                "name": archive.name,
                "url": f"{server.url}/files/{archive.name}",
                "md5": _md5(archive),
                "size_bytes": archive.stat().st_size,
                "note": "test",
            }
        )
    table = staging / "ixi_files.tsv"
    pd.DataFrame(rows).to_csv(table, sep="\t", index=False)
    return table


@pytest.mark.workflow
def test_download_extracts_verified_archives_into_a_new_folder_only(server: Served, tmp_path: Path) -> None:
    table = _publish_archives(server, tmp_path / "staging")
    workdir = tmp_path / "run"
    mine = _user_folder(workdir / "mine")  # beside the raw folder, in the working directory
    override = {"dataset": {"file_table": str(table), "raw_dir": "data/raw"}}
    configs = (ROOT / "config" / "ixi.yaml",)
    # An IXI-PD.tar already in download_dir, but not the published one: download_ixi never runs.
    downloads = workdir / "results" / "ixi" / "downloads"
    downloads.mkdir(parents=True)
    with tarfile.open(downloads / "IXI-PD.tar", "w") as tar:
        tar.add(workdir / "mine" / "IXI-PD" / "IXI002-Guys-0828-PD.nii.gz", arcname="IXI002-Guys-0828-PD.nii.gz")
    wrong = _md5(downloads / "IXI-PD.tar")

    refused = run_snakemake(workdir, "--cores", "1", "data/raw", base_configs=configs, config=override, timeout=300)
    assert refused.returncode != 0
    expected = _md5(server.root / "IXI-PD.tar")
    assert f"IXI-PD.tar: MD5 mismatch, expected {expected}, got {wrong}" in refused.stderr, refused.stderr[-3000:]
    assert not (workdir / "data" / "raw").exists()

    (downloads / "IXI-PD.tar").unlink()
    result = run_snakemake(workdir, "--cores", "1", "data/raw", base_configs=configs, config=override, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    raw = workdir / "data" / "raw"
    assert len(list(raw.glob("IXI-*/*.nii.gz"))) == 6 and (raw / ixi.OWNER_MARKER).is_file()
    assert _checksums(workdir / "mine") == mine
    # The folder it made is its own: a rerun accepts it and has nothing to do.
    again = run_snakemake(workdir, "-n", "data/raw", base_configs=configs, config=override, timeout=120)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr, again.stderr[-3000:]
