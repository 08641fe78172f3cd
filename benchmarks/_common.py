"""Shared helpers for the benchmark scripts: where results go, how tables are shown."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"


def read_config(name: str) -> dict:
    """``config/<name>`` as the workflow reads it (without its schema defaults)."""
    return yaml.safe_load((ROOT / "config" / name).read_text())


def machine() -> str:
    """One line about where the numbers were measured (cores, load)."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{platform.node()} · {os.cpu_count()} cores · load {load:.1f} · {time.strftime('%Y-%m-%d %H:%M')}"


def report(table: pd.DataFrame, name: str, title: str) -> Path:
    """Print ``table`` under ``title`` and write it to ``benchmarks/results/<name>.csv``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.csv"
    table.to_csv(path, index=False)
    print(f"\n## {title}\n({machine()})")
    with pd.option_context("display.width", 200, "display.max_columns", 50, "display.max_rows", 500):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"-> {path.relative_to(ROOT)}")
    return path


def median_time(function, repeats: int, warmup: int = 1) -> tuple[float, float]:
    """Median (wall, CPU) seconds of ``function()`` over ``repeats`` calls after ``warmup`` calls.

    CPU seconds are this process's (all its threads): on a shared, loaded machine they inflate
    far less than wall seconds, so ratios of CPU seconds are the steadier comparison.
    """
    for _ in range(warmup):
        function()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        function()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return float(pd.Series(walls).median()), float(pd.Series(cpus).median())
