"""Training input pipeline: volumes/s of our loader against the naive torchio pipeline.

Pipelines, all with config/config.yaml's ``training.augmentation`` (same probabilities), the
same grid and batch size, 0 and 2 workers:

- ``naive``: ``tio.SubjectsDataset`` over float32 ``.nii.gz`` files, torchio's own transforms.
- ``cached+tio``: ``brainage.data.AgeDataset`` over float16 ``.npy`` arrays (what preprocessing
  writes) with torchio's ``RandomBiasField``: what caching alone buys.
- ``ours``: ``AgeDataset`` + ``build_transforms`` + ``make_loader``, the training code path
  (``RandomBiasField`` is ``brainage.data.FastRandomBiasField``).

Also each transform's cost alone on one volume (p = 1), reading one volume, and the composed
pipeline per volume (mean over draws, with the configured probabilities).

Run: .venv/bin/python benchmarks/loader.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch
import torchio as tio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median_time, read_config, report
from brainage.data import (
    AgeDataset,
    ChannelTransform,
    FastRandomBiasField,
    build_transforms,
    make_loader,
    torchio_arguments,
)
from brainage.vocabulary import TRAIN

BATCH = 4


def torchio_compose(spec: list[dict]) -> tio.Compose:
    """The spec built from torchio's own classes (what a plain torchio pipeline would use)."""
    return tio.Compose([getattr(tio, entry["name"])(**torchio_arguments(entry)) for entry in spec])


def head_like(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """An ellipsoid 'head' with smooth texture and noise, intensities in about [0, 1.5]."""
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    radius = sum(g**2 / 0.8**2 for g in grids)
    texture = sum(np.sin(3 * g + rng.uniform(0, 6)) for g in grids) / 6
    volume = np.where(radius < 1, 0.8 + texture, 0.0) + rng.normal(0, 0.02, shape)
    return volume.astype(np.float32)


def write_cohort(root: Path, shape: tuple[int, int, int], n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)
    rows = []
    affine = np.eye(4)
    for i in range(n):
        volume = head_like(shape, rng)
        subject = f"S{i:03d}"
        np.save(root / f"{subject}_T1.npy", volume.astype(np.float16))
        nib.save(nib.Nifti1Image(volume, affine), root / f"{subject}_T1.nii.gz")
        rows.append({"subject": subject, "age": 20.0 + i, "tensor_T1": str(root / f"{subject}_T1.npy")})
    manifest = pd.DataFrame(rows)
    split = manifest[["subject", "age"]].assign(set=TRAIN)
    return manifest, split


def epochs_rate(loader, epochs: int) -> tuple[float, float]:
    """(volumes per wall second, volumes per CPU second of this process) over epochs 2..``epochs``.

    Epoch 1 warms up workers and caches. The CPU rate is meaningful with 0 workers only (the
    workers' CPU time is not this process's).
    """
    for _ in loader:
        pass
    count, start, cpu = 0, time.perf_counter(), time.process_time()
    for _ in range(epochs - 1):
        for batch in loader:
            count += len(batch[0]) if isinstance(batch, (list, tuple)) else len(batch["age"])
    return count / (time.perf_counter() - start), count / (time.process_time() - cpu)


def loader_table(
    root: Path, manifest: pd.DataFrame, split: pd.DataFrame, spec: list[dict], grid: str, epochs: int
) -> list[dict]:
    rows = []
    for workers in (0, 2):
        naive_set = tio.SubjectsDataset(
            [
                tio.Subject(T1=tio.ScalarImage(root / f"{s}_T1.nii.gz"), age=a)
                for s, a in zip(manifest["subject"], manifest["age"], strict=True)
            ],
            transform=torchio_compose(spec),
        )
        torch.manual_seed(0)
        naive = tio.SubjectsLoader(
            naive_set, batch_size=BATCH, shuffle=True, num_workers=workers, persistent_workers=workers > 0
        )
        cached_tio = AgeDataset(manifest, split, TRAIN, ["T1"], ChannelTransform(torchio_compose(spec), []))
        ours = AgeDataset(manifest, split, TRAIN, ["T1"], build_transforms(spec, []))
        for name, loader in (
            ("naive (.nii.gz + torchio)", naive),
            ("cached .npy + torchio bias field", make_loader(cached_tio, BATCH, True, workers, 0, "cpu")),
            ("ours (cached .npy + fast bias field)", make_loader(ours, BATCH, True, workers, 0, "cpu")),
        ):
            wall, cpu = epochs_rate(loader, epochs)
            rows.append(
                {
                    "grid": grid,
                    "workers": workers,
                    "pipeline": name,
                    "volumes_per_s": wall,
                    "volumes_per_cpu_s": cpu if workers == 0 else float("nan"),
                }
            )
            del loader
    table = pd.DataFrame(rows)
    naive_rate = table.groupby("workers")["volumes_per_s"].transform("first")
    table["vs_naive_same_workers"] = table["volumes_per_s"] / naive_rate
    table["vs_naive_workers0"] = table["volumes_per_s"] / table["volumes_per_s"].iloc[0]
    table["cpu_vs_naive"] = table["volumes_per_cpu_s"] / table["volumes_per_cpu_s"].iloc[0]
    return table.to_dict("records")


def transform_table(root: Path, spec: list[dict], grid: str, repeats: int) -> list[dict]:
    """Seconds per volume: reading, each transform alone (p = 1), and the composed pipelines."""
    nii = root / "S000_T1.nii.gz"
    npy = root / "S000_T1.npy"
    tensor = torch.from_numpy(np.load(npy).astype(np.float32))[None]

    def subject() -> tio.Subject:
        return tio.Subject(T1=tio.ScalarImage(tensor=tensor.clone(), affine=np.eye(4)))

    costs = {
        "read .nii.gz (torchio)": lambda: tio.ScalarImage(nii).load(),
        "read .npy float16 → float32": lambda: torch.from_numpy(
            np.asarray(np.load(npy, mmap_mode="r"), dtype=np.float32)
        ),
    }
    for entry in spec:
        kwargs = torchio_arguments(entry, drop=("name", "p"))
        costs[f"{entry['name']} (torchio, p=1)"] = getattr(tio, entry["name"])(**kwargs)
        if entry["name"] == "RandomBiasField":
            costs["RandomBiasField (fast, p=1)"] = FastRandomBiasField(**kwargs)
    rows = []
    for name, cost in costs.items():
        call = cost if name.startswith("read") else (lambda t=cost: t(subject()))
        torch.manual_seed(0)
        wall, cpu = median_time(call, repeats)
        rows.append({"grid": grid, "step": name, "ms_per_volume": 1000 * wall, "cpu_ms_per_volume": 1000 * cpu})
    # Composed with the configured probabilities: the mean over draws is the expected cost.
    draws = max(20, 4 * repeats)
    for name, compose in (
        ("all four (torchio, configured p)", torchio_compose(spec)),
        ("all four (ours, configured p)", build_transforms(spec, [])),
    ):
        torch.manual_seed(0)
        call = (
            (lambda c=compose: c(subject()))
            if isinstance(compose, tio.Transform)
            else (lambda c=compose: c({"T1": tensor.clone()}))
        )
        call()
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(draws):
            call()
        rows.append(
            {
                "grid": grid,
                "step": name + " mean",
                "ms_per_volume": 1000 * (time.perf_counter() - start) / draws,
                "cpu_ms_per_volume": 1000 * (time.process_time() - cpu) / draws,
            }
        )
    always = [dict(entry, p=1.0) if "p" in entry else entry for entry in spec]
    tio_all, ours_all = torchio_compose(always), build_transforms(always, [])
    torch.manual_seed(0)
    for label, call in (
        ("all four (torchio, p=1)", lambda: tio_all(subject())),
        ("all four (ours, p=1)", lambda: ours_all({"T1": tensor.clone()})),
    ):
        wall, cpu = median_time(call, repeats)
        rows.append({"grid": grid, "step": label, "ms_per_volume": 1000 * wall, "cpu_ms_per_volume": 1000 * cpu})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small grids and few volumes (< 1 min)")
    args = parser.parse_args()
    torch.manual_seed(0)
    config = read_config("config.yaml")
    spec = config["training"]["augmentation"]
    demo = tuple(config["preprocessing"]["grid"]["shape"])
    if args.quick:
        grids, volumes, epochs, repeats = {"64³": (64, 64, 64), "demo": demo}, 8, 2, 3
    else:
        grids, volumes, epochs, repeats = {"128³": (128, 128, 128), "demo": demo}, 16, 3, 7
    loaders, transforms = [], []
    with tempfile.TemporaryDirectory(prefix="bench_loader_") as tmp:
        for label, shape in grids.items():
            grid = f"{label} {'×'.join(map(str, shape))}"
            root = Path(tmp) / label
            root.mkdir()
            manifest, split = write_cohort(root, shape, volumes)
            transforms += transform_table(root, spec, grid, repeats)
            loaders += loader_table(root, manifest, split, spec, grid, epochs)
    print(f"augmentation (config/config.yaml): {spec}")
    report(
        pd.DataFrame(transforms), "loader_transforms", "Cost per volume of reading and of each transform (1 channel)"
    )
    report(
        pd.DataFrame(loaders),
        "loader",
        f"Loader throughput, batch {BATCH}, {volumes} volumes, epochs 2..{epochs} timed",
    )


if __name__ == "__main__":
    main()
