"""Attribution cost per subject at IXI's real grid: Integrated Gradients as rule ``attribution`` runs it.

Each case builds a model with config/ixi.yaml's published widths (random weights: the cost does
not depend on them) and attributes one subject of 160×192×160 voxels from a baseline image with
``brainage.attribution.integrated_gradients``, ixi.yaml's ``attribution.steps`` and the model's
ixi.yaml batch size as path points per pass, in a fresh process so that its peak RSS
(``ru_maxrss``) is its own. The demo's cost is in each run's benchmark files
(``results/benchmarks/attribution/``).

CPU: cnn3d and sfcn. HighRes3DNet never downsamples: at the real grid a CPU pass holds tens of
GB of activations, so it is measured on CUDA only. Without CUDA the CUDA cases are skipped.

Run: .venv/bin/python benchmarks/attribution.py [--quick] [--device cpu|cuda|all] [--threads N]
(``--quick``: 2 integration steps instead of ixi.yaml's, about 1 min on the CPU.)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import read_config, report
from brainage.attribution import integrated_gradients
from brainage.models import build_model

IXI_GRID = (160, 192, 160)
CPU_MODELS = ("cnn3d", "sfcn")
CUDA_MODELS = ("cnn3d", "sfcn", "highresnet")


def run_case(case: dict) -> dict:
    """(child process) Attribute one real-size subject; seconds and peak memory."""
    config = read_config("ixi.yaml")
    entry = config["models"][case["model"]]
    batch = (entry.get("training") or {}).get("batch_size", config["training"]["batch_size"])
    steps = case["steps"] or int(config["attribution"]["steps"])
    torch.set_num_threads(case["threads"])
    torch.manual_seed(0)
    device = torch.device(case["device"])
    model = build_model(case["model"], 1, **(entry.get("params") or {})).to(device)
    image = torch.randn(1, 1, *IXI_GRID)
    baseline = torch.zeros(1, *IXI_GRID)
    start = time.perf_counter()
    integrated_gradients(model, image, baseline, steps=steps, batch_size=batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {**case, "steps": steps, "path_points_per_pass": batch, "seconds_per_subject": seconds, "peak_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda", "all"), default="all")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each CPU case")
    parser.add_argument("--quick", action="store_true", help="2 integration steps")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return
    cases = []
    steps = 2 if args.quick else None
    if args.device in ("cpu", "all"):
        cases += [{"model": model, "device": "cpu", "threads": args.threads, "steps": steps} for model in CPU_MODELS]
    if args.device in ("cuda", "all"):
        if torch.cuda.is_available():
            cases += [
                {"model": model, "device": "cuda", "threads": args.threads, "steps": steps} for model in CUDA_MODELS
            ]
        else:
            print("no CUDA device: CUDA cases skipped")
    rows = []
    for case in cases:
        result = subprocess.run(
            [sys.executable, __file__, "--case", json.dumps(case)], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"case {case} failed:\n{result.stderr[-2000:]}")
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    report(pd.DataFrame(rows), "attribution", "Attribution cost per subject at 160×192×160 (Integrated Gradients)")


if __name__ == "__main__":
    main()
