"""How preprocessing and training cost grow with the number of subjects.

For each count, a fresh run directory with ``synthetic.n_subjects`` overridden (split sizes
scaled to fit, training fixed to a few epochs without early stopping) runs

1. preprocessing: everything up to ``results/manifest/manifest.csv`` (synthesis, registration,
   binarization, QC, training arrays of every subject), then
2. training: one model, ``results/train/T1/cnn3d/replicate0/model.pt`` (split included).

Per-subject rule seconds come from the run's benchmark files; a least-squares line
``seconds = fixed + per_subject × subjects`` over the counts gives the figures the README uses to
predict the real study (multiply by its subject count; registration grows with the geometry,
see benchmarks/registration.py).

Run: .venv/bin/python benchmarks/scaling.py [--quick] [--counts 25 50 100] [--cores 2]
--quick: config/tiny.yaml geometry (scale 0.15), counts 28 and 36, one epoch. The split needs
10 training subjects beyond eval and tune after QC exclusions: below ~28 synthetic subjects it refuses.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, report
from brainage.metrics import benchmark_table
from brainage.paths import RESULTS, derived
from brainage.vocabulary import T1, TRAIN
from workflow import snakemake

PREPROCESS_RULES = ("synthesize_subject", "register", "binarize", "qc_subject", "training_arrays")
# The run that is timed: its files, named as rule train names them.
TRAIN_RUN = {"modality": T1, "model": "cnn3d", "replicate": 0}


def overlay(n: int, epochs: int) -> dict:
    """Config overrides for ``n`` subjects: split sizes that fit and a fixed number of epochs."""
    return {
        "synthetic": {"n_subjects": n},
        "split": {"eval_size": max(4, n // 5), "tune_size": max(3, n // 10), "age_bins": 4 if n < 40 else 5},
        "training": {"epochs": epochs, "patience": epochs},
    }


def measure(n: int, base: list[Path], epochs: int, cores: int, root: Path) -> dict:
    workdir = root / f"n{n}"
    workdir.mkdir()
    overrides = workdir / "overrides.yaml"
    overrides.write_text(yaml.safe_dump(overlay(n, epochs)))
    configfiles = [*base, overrides]
    manifest = derived("manifest", name="manifest", ext=".csv")
    weights = derived("train", **TRAIN_RUN, name="model", ext=".pt")
    pre_wall, _ = snakemake(workdir, cores, configfiles, [str(manifest)], workdir / "preprocess.log")
    train_wall, _ = snakemake(workdir, cores, configfiles, [str(weights)], workdir / "train.log")
    results = workdir / RESULTS
    jobs = benchmark_table(sorted(derived("benchmarks", root=results).rglob("*.tsv")))
    per_rule = jobs.groupby("rule")["s"].sum()
    split = pd.read_csv(derived("split", name="split", ext=".csv", root=results))
    history = pd.read_csv(derived("train", **TRAIN_RUN, name="history", ext=".csv", root=results))
    row = {
        "n_subjects": n,
        "preprocessed": int((jobs["rule"] == "register").sum()),
        "train_subjects": int((split["set"] == TRAIN).sum()),
        "preprocess_wall_s": pre_wall,
        "preprocess_job_s": float(sum(per_rule.get(rule, 0.0) for rule in PREPROCESS_RULES)),
        **{f"{rule}_s": float(per_rule.get(rule, 0.0)) for rule in PREPROCESS_RULES},
        "train_wall_s": train_wall,
        "train_job_s": float(per_rule.get("train", np.nan)),
        "epoch_s": float(history["seconds"].mean()),
    }
    print(row, flush=True)
    return row


def fit(x: pd.Series, y: pd.Series) -> tuple[float, float]:
    """(fixed, slope) of the least-squares line y = fixed + slope·x."""
    slope, fixed = np.polyfit(x.to_numpy(float), y.to_numpy(float), 1)
    return float(fixed), float(slope)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--counts", type=int, nargs="+")
    parser.add_argument("--epochs", type=int, help="training epochs (default 3, quick 1)")
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    counts = args.counts or ([28, 36] if args.quick else [25, 50, 100])
    epochs = args.epochs or (1 if args.quick else 3)
    base = [ROOT / "config" / "tiny.yaml"] if args.quick else []
    label = "tiny" if args.quick else "default"
    root = Path(tempfile.mkdtemp(prefix="bench_scaling_"))
    print(f"run directories under {root}", flush=True)
    rows = pd.DataFrame([measure(n, base, epochs, args.cores, root) for n in counts])
    report(
        rows, f"scaling_{label}", f"Cost against subject count ({label} geometry, {args.cores} cores, {epochs} epochs)"
    )
    fits = []
    for quantity, x in (
        ("preprocess_wall_s", "preprocessed"),
        ("preprocess_job_s", "preprocessed"),
        *((f"{rule}_s", "preprocessed") for rule in PREPROCESS_RULES),
        ("train_job_s", "train_subjects"),
        ("epoch_s", "train_subjects"),
    ):
        fixed, slope = fit(rows[x], rows[quantity])
        fits.append({"quantity": quantity, "per": x, "fixed_s": fixed, "s_per_subject": slope})
    report(pd.DataFrame(fits), f"scaling_{label}_fit", "Fitted seconds = fixed + s_per_subject × subjects")


if __name__ == "__main__":
    main()
