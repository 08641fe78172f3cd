"""The whole workflow on the tiny config: runs, caches, and reproduces itself from scratch."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import run_snakemake

pytestmark = pytest.mark.workflow

RUN = ("--cores", "2", "--resources", "gpu=1")


def _job_counts(dry_run_output: str) -> dict[str, int]:
    """Rule name -> planned jobs, from the 'Job stats' table of a dry run."""
    table = dry_run_output.split("Job stats:", 1)[1]
    return {rule: int(count) for rule, count in re.findall(r"^(\w+)\s+(\d+)$", table, re.MULTILINE) if rule != "total"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("tiny")
    result = run_snakemake(workdir, *RUN)
    assert result.returncode == 0, result.stderr[-5000:]
    return workdir


def test_dry_run_plans_the_synthetic_data_before_anything_exists(workdir: Path) -> None:
    result = run_snakemake(workdir, "-n")
    assert result.returncode == 0, result.stderr[-3000:]
    counts = _job_counts(result.stdout)
    assert counts["synthesize_subject"] >= 25
    assert counts["assemble_synthetic_ixi"] == 1
    assert counts["inventory"] == 1


def test_every_final_output_exists(tiny_run: Path) -> None:
    results = tiny_run / "results"
    for name in [
        "synthetic/IXI.xls",
        "synthetic/ground_truth.csv",
        "figures/synthetic_montage.png",
        "inventory/subjects.csv",
        "manifest/manifest.csv",
        "manifest/qc_gallery.png",
        "split/split.csv",
        "split/split.png",
        "evaluation/metrics.csv",
        "evaluation/comparisons.csv",
        "evaluation/learning_curves.png",
        "evaluation/mae.pdf",
        "evaluation/benchmarks.png",
    ]:
        assert (results / name).stat().st_size > 0, name
    manifest = pd.read_csv(results / "manifest" / "manifest.csv")
    subject = manifest["subject"].iloc[0]
    assert (results / "preprocess" / subject / f"{subject}_TOF_reg_PD_bin.nii.gz").exists()
    metrics = pd.read_csv(results / "evaluation" / "metrics.csv")
    assert len(metrics) == 4 * 3


def test_rerun_has_nothing_to_do(tiny_run: Path) -> None:
    result = run_snakemake(tiny_run, "-n")
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def test_changing_the_percentile_reruns_only_binarization_and_its_dependents(tiny_run: Path) -> None:
    result = run_snakemake(tiny_run, "-n", config={"preprocessing": {"binarize": {"percentile": 5.0}}})
    assert result.returncode == 0, result.stderr[-3000:]
    counts = _job_counts(result.stdout)
    assert counts["binarize"] >= 20
    assert "register" not in counts and "synthesize_subject" not in counts
    assert {"training_arrays", "qc_subject", "manifest", "train", "evaluate"} <= set(counts)


def test_from_scratch_gives_the_same_numbers(tiny_run: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    again.mkdir()
    result = run_snakemake(again, *RUN)
    assert result.returncode == 0, result.stderr[-5000:]
    for table in ["split/split.csv", "manifest/manifest.csv", "evaluation/metrics.csv"]:
        first = pd.read_csv(tiny_run / "results" / table)
        second = pd.read_csv(again / "results" / table)
        if "tensor_T1" in first:
            # Absolute paths differ between the two working directories.
            first, second = (t.drop(columns=[c for c in t if c.startswith("tensor_")]) for t in (first, second))
        pd.testing.assert_frame_equal(first, second, obj=table)
    shutil.rmtree(again)
