"""config/ixi.yaml's code path end to end: download from a local server, verify, extract, run.

The archives are built from a small synthetic cohort in IXI's layout (flat .nii.gz members) and
served on 127.0.0.1; the workflow downloads, checks the MD5s, extracts read-only and runs the
study up to the split, scaled down by the tiny config. The raw folder is never written.
"""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import pandas as pd
import pytest

from brainage import synth
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
        synth.synthesize_subject(row, staging, staging / "truth", 0.15, SEED)
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
            {"name": name, "url": f"{server.url}/files/{name}", "md5": _md5(server.root / name), "size_bytes": size, "note": "test"}
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
        workdir, "--cores", "2", "results/split/split.csv",
        base_configs=(ROOT / "config" / "ixi.yaml",), config=override,
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
