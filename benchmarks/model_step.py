"""Training step cost per model: forward + backward + optimizer samples/s and peak memory.

CPU part: the demo widths at the demo grid (config/config.yaml; batch from there) and the
published widths of config/ixi.yaml (batch sizes from there) at 32×40×32, the smallest grid
their five pooled blocks accept; each case runs in a fresh process so its peak RSS (``ru_maxrss``) is its own.

CUDA part: the real-IXI grid 160×192×160 at the published widths and ixi.yaml batch sizes, with
and without bf16 autocast, and for highresnet with and without activation checkpointing;
``torch.cuda.max_memory_allocated`` is the peak. Without CUDA it says so and skips.

The step is the training code's: ``brainage.train._objective`` (L1 in years, KL over bins for
sfcn), backward, gradient clipping, AdamW.

Run: .venv/bin/python benchmarks/model_step.py [--quick] [--device all|cpu|cuda]
GPU machine, one command (< 5 min): .venv/bin/python benchmarks/model_step.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import read_config, report
from brainage.models import build_model, count_parameters
from brainage.train import _objective

MODELS = ("cnn3d", "highresnet", "sfcn")
IXI_GRID = (160, 192, 160)
# The published cnn3d and sfcn halve the grid five times: the demo grid is too small for them.
PUBLISHED_CPU_GRID = (32, 40, 32)


def configs() -> tuple[dict, dict]:
    return read_config("config.yaml"), read_config("ixi.yaml")


def model_settings(config: dict, model: str) -> tuple[dict, int]:
    """(architecture params, batch size) of ``model`` in ``config``."""
    entry = config["models"][model]
    batch = (entry.get("training") or {}).get("batch_size", config["training"]["batch_size"])
    return dict(entry.get("params") or {}), int(batch)


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_case(case: dict) -> dict:
    """Time ``case['steps']`` training steps after ``case['warmup']`` and measure peak memory."""
    device = torch.device(case["device"])
    torch.manual_seed(0)
    params = dict(case["params"])
    if case["model"] == "highresnet":
        params["checkpointing"] = case["checkpointing"]
    if case["model"] != "sfcn":
        params.update(age_mean=50.0, age_sd=15.0)
    model = build_model(case["model"], 1, "batch", **params).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images = torch.randn(case["batch"], 1, *case["grid"], device=device)
    ages = torch.empty(case["batch"], device=device).uniform_(20, 80)
    amp = case["amp"]

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss, _ = _objective(model, images, ages)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    row = {k: case[k] for k in ("device", "model", "widths", "batch", "amp", "checkpointing")}
    row["grid"] = "×".join(map(str, case["grid"]))
    row["parameters"] = count_parameters(model)
    baseline = rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    try:
        for _ in range(case["warmup"]):
            step()
        sync()
        start = time.perf_counter()
        for _ in range(case["steps"]):
            step()
        sync()
        seconds = (time.perf_counter() - start) / case["steps"]
        row.update(s_per_step=seconds, samples_per_s=case["batch"] / seconds, status="ok")
    except torch.OutOfMemoryError:
        row.update(s_per_step=float("nan"), samples_per_s=float("nan"), status="OOM")
    if device.type == "cuda":
        row["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        row["memory"] = "cuda max_memory_allocated"
    else:
        row["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        row["step_mb"] = row["peak_mb"] - baseline
        row["memory"] = "peak RSS (process)"
    # Release the model's memory before empty_cache. Rebinding empties step()'s closure cells as
    # `del` would, and keeps the names defined for the linter (F821).
    model = optimizer = images = None
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def cpu_cases(quick: bool, threads: int) -> list[dict]:
    demo, ixi = configs()
    demo_grid = tuple(demo["preprocessing"]["grid"]["shape"])
    cases = []
    for label, config, grid in (("demo", demo, demo_grid), ("published", ixi, PUBLISHED_CPU_GRID)):
        if quick and label == "published":
            continue
        for model in MODELS:
            params, batch = model_settings(config, model)
            cases.append(
                {
                    "device": "cpu",
                    "model": model,
                    "widths": label,
                    "params": params,
                    "batch": batch,
                    "grid": grid,
                    "amp": False,
                    "checkpointing": False,
                    "warmup": 1,
                    "steps": 2 if quick else 5,
                    "threads": threads,
                }
            )
    return cases


def cuda_cases(quick: bool) -> list[dict]:
    _, ixi = configs()
    cases = []
    for model in MODELS:
        params, batch = model_settings(ixi, model)
        for checkpointing in (False, True) if model == "highresnet" else (False,):
            for amp in (False, True):
                cases.append(
                    {
                        "device": "cuda",
                        "model": model,
                        "widths": "published",
                        "params": params,
                        "batch": batch,
                        "grid": IXI_GRID,
                        "amp": amp,
                        "checkpointing": checkpointing,
                        "warmup": 2,
                        "steps": 2 if quick else 5,
                    }
                )
    return cases


def in_fresh_process(case: dict) -> dict:
    """Run one CPU case in a child process (its own peak RSS and thread setting)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(case["threads"])}
    result = subprocess.run(
        [sys.executable, __file__, "--case", json.dumps(case)], capture_output=True, text=True, env=env, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"case {case['model']} {case['widths']} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="demo widths only on CPU, 2 timed steps (< 1 min)")
    parser.add_argument("--device", choices=("all", "cpu", "cuda"), default="all")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        case = json.loads(args.case)
        torch.set_num_threads(case.get("threads", 1))
        case["grid"] = tuple(case["grid"])
        print(json.dumps(run_case(case)))
        return
    if args.device in ("all", "cpu"):
        rows = [in_fresh_process(case) for case in cpu_cases(args.quick, args.threads)]
        report(pd.DataFrame(rows), "model_step_cpu", f"Training step on CPU ({args.threads} threads)")
    if args.device in ("all", "cuda"):
        if not torch.cuda.is_available():
            print(
                "\n## Training step on CUDA, real-IXI grid 160×192×160\nCUDA is absent on this machine: skipped "
                "(run `.venv/bin/python benchmarks/model_step.py --device cuda` on a GPU machine)."
            )
            return
        torch.backends.cudnn.benchmark = True
        rows = []
        for case in cuda_cases(args.quick):
            rows.append(run_case(case))
            print(json.dumps(rows[-1]), flush=True)
        name = torch.cuda.get_device_name()
        report(pd.DataFrame(rows), "model_step_cuda", f"Training step on {name}, real-IXI grid 160×192×160")


if __name__ == "__main__":
    main()
