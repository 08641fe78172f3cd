"""Whole-workflow cost: the default run from empty results, a rerun with nothing changed, and
where the time goes (per-rule totals from the run's ``results/benchmarks/<rule>/*.tsv``).

Goals (issue "Benchmarks"): default run ≤ 10 min on 2 cores, rerun ≤ 5 s.

Run: .venv/bin/python benchmarks/workflow.py [--quick] [--cores 2] [--workdir DIR]
     .venv/bin/python benchmarks/workflow.py --summarize DIR   (an existing run's benchmarks only)
--quick uses config/tiny.yaml. The run directory is kept (printed) for inspection.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, report
from brainage.metrics import benchmark_table, summarize_benchmarks
from brainage.paths import RESULTS, derived

SNAKEMAKE = Path(sys.executable).with_name("snakemake")


def snakemake(workdir: Path, cores: int, configfiles: list[Path], targets: list[str], log: Path) -> tuple[float, str]:
    """Run snakemake; return (wall seconds, output). Raises with the log's tail on failure."""
    # Targets first: --configfile takes every following word.
    command = [
        str(SNAKEMAKE),
        *targets,
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        str(cores),
        "--resources",
        "gpu=1",
    ]
    if configfiles:
        command += ["--configfile", *map(str, configfiles)]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    output = result.stdout + result.stderr
    log.write_text(output)
    if result.returncode != 0:
        raise RuntimeError(f"snakemake failed after {seconds:.0f} s (log {log}):\n{output[-4000:]}")
    return seconds, output


def rule_totals(workdir: Path) -> pd.DataFrame:
    """Per-rule jobs, total/mean/max seconds and peak RSS, with each rule's share of the job time."""
    folder = derived("benchmarks", root=workdir / RESULTS)
    paths = sorted(folder.rglob("*.tsv"))
    if not paths:
        raise FileNotFoundError(f"no benchmark files under {folder}")
    summary = summarize_benchmarks(benchmark_table(paths))
    summary["share"] = summary["total_s"] / summary["total_s"].sum()
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick", action="store_true", help="config/tiny.yaml (the whole tiny workflow: minutes, not < 1 min)"
    )
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--workdir", type=Path, help="empty run directory (default: a new one under /tmp)")
    parser.add_argument("--summarize", type=Path, help="only summarize this existing run directory")
    args = parser.parse_args()
    if args.summarize:
        report(
            rule_totals(args.summarize),
            f"workflow_rules_{args.summarize.resolve().name}",
            f"Per-rule totals of {args.summarize}",
        )
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_workflow_"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = workdir / RESULTS
    if results.exists() and any(results.iterdir()):
        raise SystemExit(f"{results} is not empty: the benchmark needs an empty run directory")
    configfiles = [ROOT / "config" / "tiny.yaml"] if args.quick else []
    label = "tiny" if args.quick else "default"
    print(f"run directory: {workdir} ({label} config, {args.cores} cores)", flush=True)
    first, _ = snakemake(workdir, args.cores, configfiles, [], workdir / "first_run.log")
    print(f"first run: {first:.1f} s", flush=True)
    again, output = snakemake(workdir, args.cores, configfiles, [], workdir / "rerun.log")
    nothing = "Nothing to be done" in output
    print(f"rerun: {again:.1f} s ({'nothing to be done' if nothing else 'JOBS RAN'})", flush=True)
    rules = rule_totals(workdir)
    job_seconds = rules["total_s"].sum()
    runs = pd.DataFrame(
        [
            {
                "config": label,
                "cores": args.cores,
                "run": "from empty results",
                "wall_s": first,
                "goal_s": 600.0,
                "met": first <= 600,
                "job_s_sum": job_seconds,
                "core_utilisation": job_seconds / (first * args.cores),
            },
            {
                "config": label,
                "cores": args.cores,
                "run": "rerun, nothing changed",
                "wall_s": again,
                "goal_s": 5.0,
                "met": again <= 5 and nothing,
                "job_s_sum": float("nan"),
                "core_utilisation": float("nan"),
            },
        ]
    )
    report(runs, f"workflow_{label}", f"Workflow wall time ({label} config, {args.cores} cores)")
    report(rules, f"workflow_{label}_rules", "Per-rule totals (job wall seconds from the benchmark files)")


if __name__ == "__main__":
    main()
