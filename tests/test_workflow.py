"""The whole workflow on the tiny config: runs, caches, and reproduces itself from scratch."""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT, run_snakemake, snakemake_command

sys.path.insert(0, str(ROOT / "tests" / "slurm"))
from slurm_cluster import run_through_slurm, slurm_cluster  # noqa: F401 (session fixture)

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


def _train_jobs(dry_run_output: str, rule: str = "train") -> list[str]:
    """The dry run's job descriptions of a training rule (each follows a ``[date]`` line)."""
    blocks = re.split(r"^\[[^\]]*\d{4}\]$", dry_run_output, flags=re.MULTILINE)
    return [block for block in blocks if block.lstrip().startswith(f"rule {rule}:")]


@pytest.mark.parametrize(
    ("device", "gpu_token", "threads"),
    [("cpu", False, 1), ("cuda", True, 2)],
)
def test_training_jobs_take_a_gpu_token_only_when_training_on_a_gpu(
    workdir: Path, device: str, gpu_token: bool, threads: int
) -> None:
    result = run_snakemake(workdir, "-n", "--cores", "2", config={"training": {"device": device}})
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = _train_jobs(result.stdout)
    assert len(jobs) == _job_counts(result.stdout)["train"] > 0
    fold_jobs = _train_jobs(result.stdout, "train_fold")
    assert len(fold_jobs) == _job_counts(result.stdout)["train_fold"] == 2 * len(jobs)
    for job in jobs + fold_jobs:
        assert f"gpu={int(gpu_token)}" in job, job
        # Snakemake lists threads only when there are more than one.
        assert f"threads: {threads}" in job or (threads == 1 and "threads:" not in job), job


def test_replicates_train_every_run_once_per_replicate_with_its_own_seed(workdir: Path) -> None:
    result = run_snakemake(workdir, "-n", "-p", "--cores", "2", config={"replicates": [0, 2]})
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = _train_jobs(result.stdout)
    assert len(jobs) == 2 * 4 * 3
    for replicate in (0, 2):
        mine = [job for job in jobs if f"replicate{replicate}/model.pt" in job]
        assert len(mine) == 4 * 3
        assert all(f"replicate={replicate}" in job for job in mine)


def test_every_final_output_exists(tiny_run: Path) -> None:
    results = tiny_run / "results"
    for name in [
        "synthetic/IXI.xls",
        "synthetic/ground_truth.csv",
        "figures/youngest_oldest.png",
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
        "attribution/regions.csv",
        "attribution/T1/cnn3d/replicate0/enrichment.csv",
        "attribution/T1/cnn3d/replicate0/attribution.png",
        "attribution/T1+TOF_bin/sfcn/replicate0/mean_attribution.nii.gz",
        "crossval/out_of_fold.csv",
        "crossval/metrics.csv",
        "crossval/designs.csv",
        "crossval/folds.png",
        "crossval/differences.pdf",
    ]:
        assert (results / name).stat().st_size > 0, name
    manifest = pd.read_csv(results / "manifest" / "manifest.csv")
    subject = manifest["subject"].iloc[0]
    assert (results / "preprocess" / subject / f"{subject}_TOF_reg_PD_bin.nii.gz").exists()
    metrics = pd.read_csv(results / "evaluation" / "metrics.csv")
    assert len(metrics) == 4 * 4  # three networks and the baseline per modality


def test_crossval_gives_every_included_subject_one_out_of_fold_age_per_run(tiny_run: Path) -> None:
    results = tiny_run / "results"
    included = sorted(pd.read_csv(results / "manifest" / "manifest.csv")["subject"])
    held_out = []
    for fold in (1, 2):
        split = pd.read_csv(results / "crossval" / f"fold{fold}" / "split.csv")
        assert sorted(split["subject"]) == included
        held_out += split.loc[split["set"] == "eval", "subject"].tolist()
    assert sorted(held_out) == included
    out_of_fold = pd.read_csv(results / "crossval" / "out_of_fold.csv")
    for (modality, model), table in out_of_fold.groupby(["modality", "model"]):
        assert sorted(table["subject"]) == included, (modality, model)
    assert out_of_fold.groupby(["modality", "model"]).ngroups == 4 * 4


def test_cnn3d_tune_curves_stay_below_predicting_the_mean(tiny_run: Path) -> None:
    """After the first 10% of epochs no epoch's tune MAE exceeds 1.5× predicting the train mean."""
    split = pd.read_csv(tiny_run / "results" / "split" / "split.csv")
    train_mean = split.loc[split["set"] == "train", "age"].mean()
    mean_mae = (split.loc[split["set"] == "tune", "age"] - train_mean).abs().mean()
    histories = sorted((tiny_run / "results" / "train").glob("*/cnn3d/replicate0/history.csv"))
    assert len(histories) == 4
    for path in histories:
        history = pd.read_csv(path)
        after_warmup = history["tune_mae"].iloc[math.ceil(0.1 * len(history)) :]
        assert after_warmup.max() <= 1.5 * mean_mae, (path, history["tune_mae"].tolist(), mean_mae)


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


# What preprocessing decides (who is in, with which QC numbers, in which set), and what training gives.
PREPROCESSED_TABLES = ["split/split.csv", "manifest/manifest.csv", "manifest/qc_table.csv"]
COMPARED_TABLES = [*PREPROCESSED_TABLES, "evaluation/metrics.csv"]


def _assert_same_tables(first: Path, second: Path, tables: list[str] = COMPARED_TABLES) -> None:
    for table in tables:
        pd.testing.assert_frame_equal(
            pd.read_csv(first / "results" / table), pd.read_csv(second / "results" / table), obj=table
        )


def _kill_during_preprocessing(workdir: Path, timeout_s: float = 600) -> None:
    """Start the workflow and SIGKILL Snakemake and its jobs once some subjects are registered."""
    command = snakemake_command(workdir, *RUN)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while len(list((workdir / "results" / "preprocess").glob("*/*_registration.json"))) < 5:
        assert process.poll() is None, "the workflow ended before it could be killed"
        assert time.monotonic() < deadline, "preprocessing did not start in time"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def test_killed_from_scratch_run_resumes_to_the_same_numbers(tiny_run: Path, tmp_path: Path) -> None:
    """A new results/ from scratch, killed with SIGKILL mid-preprocessing, then rerun up to the
    split: what a kill could leave half-written is preprocessing's; training from the same
    arrays gives the same numbers (tests/test_train.py)."""
    again = tmp_path / "again"
    again.mkdir()
    _kill_during_preprocessing(again)
    assert not (again / "results" / "evaluation").exists()
    # A killed Snakemake leaves its lock behind: the user's first step, as Snakemake tells them.
    assert run_snakemake(again, "--unlock").returncode == 0
    result = run_snakemake(again, *RUN, "--rerun-incomplete", "split")
    assert result.returncode == 0, result.stderr[-5000:]
    # Every write is a temporary name renamed into place: no leftovers anywhere.
    assert not [path for path in (again / "results").rglob("*") if ".tmp" in path.name]
    _assert_same_tables(tiny_run, again, PREPROCESSED_TABLES)
    shutil.rmtree(again)


# Some 150 sbatch jobs on a two-core node take longer than the suite's default per-test limit.
@pytest.mark.timeout(2700)
def test_slurm_profile_runs_every_job_through_sbatch_with_the_local_results(
    tiny_run: Path,
    slurm_cluster,  # noqa: F811 (fixture)
    tmp_path: Path,
) -> None:
    """Every kind of job (the inventory checkpoint, per-subject preprocessing, a training job with
    its GPU request, a baseline fit) through sbatch, up to the split and one run of each kind:
    the other runs and the figures are more of the same rules."""
    workdir = tmp_path / "slurm"
    runs = [Path("results") / "train" / "T1" / model / "predictions.csv" for model in ("cnn3d/replicate0", "ridge")]
    process, slurm_jobs = run_through_slurm(
        slurm_cluster,
        ROOT / "Snakefile",
        workdir,
        # The profile gives training jobs 2 threads for GPU nodes; torch's CPU kernels sum in an
        # order that depends on the thread count, so equal numbers need the local run's 1 thread.
        [
            "--set-threads",
            "train=1",
            "--configfile",
            str(ROOT / "config" / "tiny.yaml"),
            "--",
            "split",
            *map(str, runs),
        ],
        timeout=2400,
    )
    assert process.returncode == 0, process.stderr[-5000:]
    logs = sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log"))
    completed = [re.findall(r"(\d+) of \d+ steps \(100%\) done", log.read_text()) for log in logs]
    steps = int(next(steps for steps in completed if steps)[-1])
    # Every job went through sbatch (a job the profile retried after a failure is listed twice).
    assert steps > 100 and slurm_jobs >= steps
    print(f"SLURM ran {slurm_jobs} jobs in {process.wall_seconds:.0f} s")
    _assert_same_tables(
        tiny_run, workdir, [*PREPROCESSED_TABLES, *map(str, (run.relative_to("results") for run in runs))]
    )
    shutil.rmtree(workdir)


def test_report_holds_every_figure_and_table_with_its_caption(tiny_run: Path) -> None:
    report = tiny_run / "results" / "report.html"
    result = run_snakemake(tiny_run, "--report", str(report))
    assert result.returncode == 0, result.stderr[-3000:]
    html = report.read_text()
    captions = ROOT / "workflow" / "report"
    for name in [
        "youngest_oldest.png",
        "qc_gallery.png",
        "split.png",
        "learning_curves.png",
        "predictions.png",
        "error_vs_age.png",
        "mae.png",
        "folds.png",
        "differences.png",
        "out_of_fold.csv",
        "benchmarks.png",
        "attribution.png",
        "enrichment.csv",
        "regions.csv",
        "metrics.csv",
        "comparisons.csv",
        "exclusions.csv",
    ]:
        assert name in html, name
    for caption in captions.glob("*.rst"):
        first_words = " ".join(caption.read_text().split()[:5])
        assert first_words in html, caption.name
