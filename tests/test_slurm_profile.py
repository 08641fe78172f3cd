"""The SLURM profile workflow/profiles/slurm, proven on a real (local, single-node) SLURM.

The cluster comes from tests/slurm/start_slurm.sh (Debian's slurm-wlm, installed
on first use; needs root).  Without root/apt the cluster test is skipped with the
reason; BRAINAGE_REQUIRE_SLURM=1 turns that skip into a failure.
"""

from __future__ import annotations

import re
import sys
from datetime import datetime
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent / "slurm"))
from slurm_cluster import (
    ROOT,
    SLURM_PROFILE,
    run_through_slurm,
    slurm_cluster,  # noqa: F401  (session fixture)
)

EXAMPLE = Path(__file__).resolve().parent / "slurm" / "Snakefile"
PROFILE_YAML = SLURM_PROFILE / "config.yaml"


def _plugin_parser():
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="snakemake-executor-plugin-slurm not installed")
    from snakemake.cli import get_argument_parser

    return get_argument_parser()


def test_profile_options_exist_in_installed_plugin():
    """Every key of the profile, and every option its comments suggest, is a real option."""
    options = _plugin_parser()._option_string_actions
    profile = yaml.safe_load(PROFILE_YAML.read_text())
    assert profile["executor"] == "slurm"
    for key in profile:
        assert f"--{key}" in options, f"profile key {key!r} is not a snakemake option"
    commented = re.findall(r"^#\s*(slurm-[a-z-]+):", PROFILE_YAML.read_text(), flags=re.M)
    assert "slurm-status-command" in commented
    for key in commented:
        assert f"--{key}" in options, f"commented option {key!r} does not exist in the installed plugin"
    assert options["--slurm-status-command"] and options["--slurm-init-seconds-before-status-checks"]


def test_profile_lifts_the_workstation_gpu_cap(monkeypatch):
    """As documented (--workflow-profile), `gpu` is not capped at 1 as in profiles/default."""
    _plugin_parser()
    from snakemake.cli import parse_args

    monkeypatch.chdir(ROOT)  # where profiles/default (resources: gpu: 1) is found
    _, args = parse_args(["--workflow-profile", str(SLURM_PROFILE)])
    assert args.executor == "slurm"
    assert args.resources["gpu"].value >= 100
    # Cross-validation's training jobs (rule train_fold) get the same GPU request as the study's.
    for rule in ("train", "train_fold"):
        assert args.set_resources[rule]["gpu"].value == 1
        assert args.set_resources[rule]["mem_mb"].value == 8000
    assert args.set_resources["register"]["mem_mb"].value == 3000
    assert args.set_threads["train"] == 2  # a login node without GPU would make it 1
    _, args = parse_args(["--profile", str(SLURM_PROFILE), "--workflow-profile", "none"])
    assert args.resources["gpu"].value >= 100
    # The pitfall the profile's header warns about: with a plain --profile, the
    # default workflow profile's `resources` win, key by key.
    default = yaml.safe_load((ROOT / "workflow" / "profiles" / "default" / "config.yaml").read_text()) or {}
    default_gpu = (default.get("resources") or {}).get("gpu")
    if default_gpu is not None:
        _, args = parse_args(["--profile", str(SLURM_PROFILE)])
        assert args.resources["gpu"].value == default_gpu


def _time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


def test_example_workflow_runs_through_slurm(slurm_cluster, tmp_path):  # noqa: F811
    proc, job_count = run_through_slurm(slurm_cluster, EXAMPLE, tmp_path / "work", timeout=600)
    log = proc.stdout + proc.stderr
    print(
        f"\n[slurm] example workflow: {job_count} SLURM jobs in {proc.wall_seconds:.1f} s (run ID {proc.slurm_run_id})"
    )
    for job in proc.slurm_jobs:
        print(f"[slurm]   {job}")
    assert proc.returncode == 0, log[-8000:]
    assert "workflow specific profile" in log and str(SLURM_PROFILE) in log

    # Every job of the workflow (all but the target rule `all`) went through sbatch.
    jobs = proc.slurm_jobs
    assert job_count == 6, log[-4000:]
    assert sorted(job.job_id for job in jobs) == sorted(proc.submitted_ids)
    assert all(job.state == "COMPLETED" for job in jobs), jobs
    assert sorted(job.rule for job in jobs) == ["features", "prepare", "prepare", "summarize", "train", "train"]
    by_rule = {}
    for job in jobs:
        by_rule.setdefault(job.rule, []).append(job)

    # Resources reached sbatch: threads -> CPUs, set-resources -> memory, gpu -> GRES.
    assert by_rule["features"][0].cpus == 2
    assert by_rule["prepare"][0].min_memory == "500M"
    for job in by_rule["train"]:
        assert job.min_memory == "8000M"  # profile's set-resources beat the rule's 500
        assert "gpu:1" in job.tres, job.tres
    # The global `gpu` resource does not serialise training: Snakemake submitted
    # both GPU jobs before either finished (SLURM queued the second for the GPU).
    first_end = min(_time(job.end) for job in by_rule["train"])
    assert all(_time(job.submit) < first_end for job in by_rule["train"])

    # Outputs: each written inside its SLURM job, with the virtualenv's python.
    results = tmp_path / "work" / "results"
    venv_python = Path(sys.executable).parent / "python"
    ids = {job.job_id for job in jobs}
    outputs = sorted(results.rglob("*.txt"))
    assert len(outputs) == 6
    for output in outputs:
        first = output.read_text().splitlines()[0]
        fields = dict(item.split("=", 1) for item in first.split())
        assert int(fields["job"]) in ids, (output, first)
        assert fields["python"] == str(venv_python), (output, first)
    assert (results / "features.txt").read_text().splitlines()[1] == "2"
    assert "cpus=2" in (results / "features.txt").read_text()
    for model in ("m1", "m2"):
        text = (results / "models" / f"{model}.txt").read_text()
        assert "gpu=none" not in text  # SLURM handed the job its (fake) GPU
        assert f"prefix={Path(sys.executable).parents[1]}" in text
    summary = (results / "summary.txt").read_text()
    assert summary.count("prefix=") == 2

    # SLURM logs stayed in the run's working directory.
    assert (tmp_path / "work" / ".snakemake" / "slurm_logs").is_dir()
