"""Why a model learns or predicts the mean: training variants side by side, scored on tune only.

Each case trains one (modality, model) run with ``brainage.train.train_run`` on a finished
workflow's manifest and split (the default run's ``results/`` unless ``--results`` says
otherwise), with the config's settings plus the case's overrides, for each seed given. The eval
set chooses nothing, so this table shows none of it: every column is from the tune set or the
training loss.

Columns: best tune MAE and its epoch; ``flat`` = SD of the selected model's tune predictions
over the SD of the tune ages (near 0: it predicts the mean); ``spike`` = the worst tune MAE after
the first 10% of epochs over the predict-the-training-mean tune MAE (above 1.5: an unstable curve);
training loss at the first and last epoch; seconds.

Run: .venv/bin/python benchmarks/training_ablation.py --model highresnet --cases baseline group
     .venv/bin/python benchmarks/training_ablation.py --list
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, read_config, report
from brainage.io import read_table
from brainage.vocabulary import TRAIN, TUNE

# Each case: overrides of the model's params and of its training settings, and the torch
# threads it trains with (1 unless given: another count sums in another order, as another
# machine does, so "2 threads" measures how far numerical noise alone moves a run).
CASES: dict[str, dict[str, dict[str, Any]]] = {
    "baseline": {},
    "norm=group": {"training": {"norm": "group"}},
    "norm=instance": {"training": {"norm": "instance"}},
    "lr=0.001": {"training": {"lr": 0.001}},
    "lr=0.0003": {"training": {"lr": 0.0003}},
    "lr=0.01": {"training": {"lr": 0.01}},
    "batch=8": {"training": {"batch_size": 8}},
    "batch=2": {"training": {"batch_size": 2}},
    "cosine": {"training": {"schedule": "cosine"}},
    "no-augmentation": {"training": {"augmentation": []}},
    "epochs x0.5": {"training": {"epochs_factor": 0.5}},
    "epochs x2": {"training": {"epochs_factor": 2}},
    "no precise-bn": {"training": {"precise_bn": False}},
    # torchio's own default, which brainage.data.build_transforms replaces by the background, 0.
    "pad minimum": {"training": {"affine_pad": "minimum"}},
    "pad minimum, no precise-bn": {"training": {"affine_pad": "minimum", "precise_bn": False}},
    "2 threads": {"threads": 2},
}


def case_settings(config: dict[str, Any], model: str, case: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model params, training settings) of ``case``: the config's, then the case's overrides."""
    entry = config["models"][model]
    params = {**entry.get("params", {}), **CASES[case].get("params", {})}
    training = {**config["training"], **entry.get("training", {})}
    overrides = dict(CASES[case].get("training", {}))
    factor = overrides.pop("epochs_factor", 1)
    if "affine_pad" in overrides:
        pad = overrides.pop("affine_pad")
        training["augmentation"] = [
            {**entry, "default_pad_value": pad} if entry["name"] == "RandomAffine" else entry
            for entry in training["augmentation"]
        ]
    training = {**training, **overrides, "device": "cpu"}
    training["epochs"] = int(training["epochs"] * factor)
    return params, copy.deepcopy(training)


def run_case(job: dict[str, Any]) -> dict[str, Any]:
    """Train one case with one seed in a fresh temporary folder; return its tune-only row."""
    from brainage.train import RunOutputs, train_run

    manifest, split = read_table(job["manifest"]), read_table(job["split"])
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        outputs = RunOutputs(weights=out / "model.pt", history=out / "history.csv", predictions=out / "predictions.csv")
        train_run(
            manifest,
            split,
            channels=job["channels"],
            model_name=job["model"],
            model_params=job["params"],
            training=job["training"],
            outputs=outputs,
            checkpoint=out / "checkpoint.pt",
            threads=job["threads"],
            seed=job["seed"],
            device="cpu",
            log=lambda line: None,
        )
        history = read_table(outputs.history)
        predictions = read_table(outputs.predictions)
    return {**job["row"], **tune_summary(history, predictions, split), "seconds": time.perf_counter() - start}


def tune_summary(history: pd.DataFrame, predictions: pd.DataFrame, split: pd.DataFrame) -> dict[str, float]:
    """Tune-set numbers of one run (no eval number enters)."""
    train_mean = split.loc[split["set"] == TRAIN, "age"].mean()
    tune = predictions[predictions["set"] == TUNE]
    mean_mae = float((tune["age"] - train_mean).abs().mean())
    warmup = max(1, math.ceil(0.1 * len(history)))
    best = history.loc[history["tune_mae"].idxmin()]
    return {
        "best_tune_mae": float(best["tune_mae"]),
        "best_epoch": int(best["epoch"]),
        "vs_mean": float(best["tune_mae"]) / mean_mae,
        "flat": float(tune["predicted"].std() / tune["age"].std()),
        "spike": float(history["tune_mae"].iloc[warmup:].max()) / mean_mae if len(history) > warmup else math.nan,
        "train_first": float(history["train_loss"].iloc[0]),
        "train_last": float(history["train_loss"].iloc[-1]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=ROOT / "results", help="a finished workflow's results/")
    parser.add_argument("--config", default="config.yaml", help="config file under config/")
    parser.add_argument("--modality", default="T1")
    parser.add_argument("--model", default="highresnet")
    parser.add_argument("--cases", nargs="+", default=["baseline"], choices=sorted(CASES))
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="training seeds (default: the config's)")
    parser.add_argument("--jobs", type=int, default=2, help="cases trained side by side, one thread each")
    parser.add_argument("--name", default="training_ablation", help="CSV name under benchmarks/results/")
    parser.add_argument("--list", action="store_true", help="print the cases and exit")
    args = parser.parse_args()
    if args.list:
        for name, overrides in CASES.items():
            print(f"{name}: {overrides}")
        return
    config = read_config(args.config)
    # The manifest's array paths are relative to the workflow's directory.
    results = args.results.resolve()
    os.chdir(results.parent)
    seeds = args.seeds or [config["seed"]]
    jobs = []
    for case in args.cases:
        params, training = case_settings(config, args.model, case)
        for seed in seeds:
            jobs.append(
                {
                    "row": {"modality": args.modality, "model": args.model, "case": case, "seed": seed},
                    "manifest": results / "manifest" / "manifest.csv",
                    "split": results / "split" / "split.csv",
                    "channels": config["channel_sets"][args.modality],
                    "model": args.model,
                    "params": params,
                    "training": training,
                    "threads": CASES[case].get("threads", 1),
                    "seed": seed,
                }
            )
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        rows = list(pool.map(run_case, jobs))
    report(pd.DataFrame(rows), args.name, f"Training ablation: {args.modality} {args.model}, tune set only")


if __name__ == "__main__":
    main()
