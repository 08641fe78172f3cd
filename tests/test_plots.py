"""Tests of brainage.plots: every figure is written, decodes, has content, and scales to the grid."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainage import metrics, plots
from brainage.qc import SubjectImages
from brainage.split import make_split

MODALITIES = ("T1", "TOF", "TOF_bin", "T1+TOF_bin")
MODELS = ("cnn3d", "highresnet", "sfcn")
GRID = list(itertools.product(MODALITIES, MODELS))
SINGLE = [("T1", "sfcn")]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_predictions(seed: int, n_train: int = 30, n_tune: int = 6, n_eval: int = 20) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = n_train + n_tune + n_eval
    age = rng.uniform(20, 86, n)
    return pd.DataFrame(
        {
            "subject": [f"IXI{i:03d}" for i in range(n)],
            "set": ["train"] * n_train + ["tune"] * n_tune + ["eval"] * n_eval,
            "age": age,
            "predicted": 0.7 * age + 15 + rng.normal(0, 5, n),
        }
    )


def make_history(seed: int, epochs: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    decay = 20 * np.exp(-np.arange(epochs) / 4)
    return pd.DataFrame(
        {
            "epoch": np.arange(1, epochs + 1),
            "train_loss": decay + 6 + rng.normal(0, 0.3, epochs),
            "tune_mae": decay + 5 + rng.normal(0, 0.5, epochs),
            "eval_mae": decay + 4.5 + rng.normal(0, 0.5, epochs),
            "lr": 1e-3,
            "seconds": 2.0,
            "samples_per_s": 10.0,
        }
    )


def runs_for(keys) -> dict[tuple[str, str], pd.DataFrame]:
    return {key: make_predictions(seed) for seed, key in enumerate(keys)}


def histories_for(keys) -> dict[tuple[str, str], pd.DataFrame]:
    return {key: make_history(seed) for seed, key in enumerate(keys)}


def mae_table(keys) -> pd.DataFrame:
    return metrics.metrics_table(runs_for(keys), n_resamples=50, seed=0)


def benchmark_summary() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "rule": ["train", "register", "evaluate"],
            "jobs": [12, 120, 1],
            "total_s": [7200.0, 900.0, 12.0],
            "mean_s": [600.0, 7.5, 12.0],
            "max_s": [900.0, 11.0, 12.0],
            "max_rss_mb": [4096.0, 700.0, np.nan],
        }
    )


def assert_png_with_content(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC
    image = matplotlib.image.imread(path)
    pixels = image.reshape(-1, image.shape[-1])
    assert pixels.var(axis=0).sum() > 0
    assert len(np.unique(pixels, axis=0)) > 2  # more than a blank canvas and one colour
    assert list(path.parent.iterdir()) == [path]  # the atomic write left no temporary file


def assert_pdf(path: Path) -> None:
    data = path.read_bytes()
    assert data[:5] == b"%PDF-"
    assert data.rstrip().endswith(b"%%EOF")


PLOTTERS = {
    "learning_curves": lambda keys, path: plots.plot_learning_curves(histories_for(keys), path),
    "predictions": lambda keys, path: plots.plot_predictions(runs_for(keys), path),
    "error_vs_age": lambda keys, path: plots.plot_error_vs_age(runs_for(keys), path),
    "mae_comparison": lambda keys, path: plots.plot_mae_comparison(
        mae_table(keys), {metrics.PREDICT_MEAN_MAE: 16.0, metrics.ORACLE_MAE: 2.4}, path
    ),
}


@pytest.mark.parametrize("keys", [SINGLE, GRID], ids=["single", "grid4x3"])
@pytest.mark.parametrize("name", list(PLOTTERS))
def test_run_figures_png(tmp_path, name, keys):
    path = tmp_path / f"{name}.png"
    PLOTTERS[name](keys, path)
    assert_png_with_content(path)


@pytest.mark.parametrize("name", list(PLOTTERS))
def test_run_figures_pdf(tmp_path, name):
    path = tmp_path / f"{name}.pdf"
    PLOTTERS[name](SINGLE, path)
    assert_pdf(path)


def test_grid_with_missing_runs_hides_empty_cells(tmp_path):
    # Not every modality × model needs to have finished; the grid keeps the others in place.
    keys = [("T1", "cnn3d"), ("TOF", "sfcn")]
    plots.plot_predictions(runs_for(keys), tmp_path / "partial.png")
    assert_png_with_content(tmp_path / "partial.png")


def test_mae_comparison_shows_every_replicate(tmp_path):
    keys = GRID[:3]
    replicates = metrics.replicate_maes(
        {(*key, r): make_predictions(10 * r + i) for i, key in enumerate(keys) for r in (0, 1)}
    )
    table = metrics.metrics_table(runs_for(keys), n_resamples=50, replicates=replicates)
    (tmp_path / "plain").mkdir()
    (tmp_path / "spread").mkdir()
    plain, spread = tmp_path / "plain" / "mae.png", tmp_path / "spread" / "mae.png"
    plots.plot_mae_comparison(table, {metrics.PREDICT_MEAN_MAE: 16.0}, plain)
    plots.plot_mae_comparison(table, {metrics.PREDICT_MEAN_MAE: 16.0}, spread, replicates)
    assert_png_with_content(spread)
    assert plain.read_bytes() != spread.read_bytes()


def test_mae_comparison_without_oracle(tmp_path):
    path = tmp_path / "mae.png"
    plots.plot_mae_comparison(mae_table(GRID[:3]), {metrics.PREDICT_MEAN_MAE: 16.0}, path)
    assert_png_with_content(path)


def out_of_fold_runs(keys, folds: int = 3) -> dict[tuple[str, str], pd.DataFrame]:
    """Each run's predictions dealt into folds: subject i held out in fold i mod folds."""
    runs = {}
    for key, predictions in runs_for(keys).items():
        held_out = np.arange(len(predictions)) % folds + 1
        runs[key] = metrics.out_of_fold(
            {fold: predictions.assign(set=np.where(held_out == fold, "eval", "train")) for fold in range(1, folds + 1)}
        )
    return runs


@pytest.mark.parametrize("suffix", [".png", ".pdf"])
def test_crossval_figures(tmp_path, suffix):
    keys = list(itertools.product(("T1", "TOF_bin"), ("cnn3d", "ridge")))
    runs = out_of_fold_runs(keys)
    (tmp_path / "folds").mkdir()
    (tmp_path / "differences").mkdir()
    folds, differences = tmp_path / "folds" / f"folds{suffix}", tmp_path / "differences" / f"differences{suffix}"
    table, spread = metrics.crossval_table(runs, n_resamples=50), metrics.fold_maes(runs)
    plots.plot_mae_comparison(table, {}, folds, spread, "each fold", "out-of-fold MAE")
    split = metrics.paired_comparisons(runs_for(keys))
    plots.plot_design_differences(split, metrics.paired_comparisons(runs), differences)
    for path in (folds, differences):
        assert_png_with_content(path) if suffix == ".png" else assert_pdf(path)


@pytest.mark.parametrize("suffix", [".png", ".pdf"])
def test_plot_benchmarks(tmp_path, suffix):
    path = tmp_path / f"benchmarks{suffix}"
    plots.plot_benchmarks(benchmark_summary(), path)
    if suffix == ".png":
        assert_png_with_content(path)
    else:
        assert_pdf(path)


def test_plot_benchmarks_single_rule(tmp_path):
    path = tmp_path / "benchmarks.png"
    plots.plot_benchmarks(benchmark_summary().iloc[[2]], path)
    assert_png_with_content(path)


@pytest.mark.parametrize(
    "call",
    [
        lambda path: plots.plot_predictions({}, path),
        lambda path: plots.plot_learning_curves({}, path),
        lambda path: plots.plot_mae_comparison(mae_table([])[:0], {}, path),
        lambda path: plots.plot_benchmarks(benchmark_summary()[:0], path),
        lambda path: plots.plot_design_differences(pd.DataFrame(), pd.DataFrame(), path),
    ],
)
def test_nothing_to_plot_is_an_error_and_writes_nothing(tmp_path, call):
    with pytest.raises(ValueError, match="no"):
        call(tmp_path / "empty.png")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("seconds", "unit"), [(30.0, "s"), (600.0, "min"), (5 * 3600.0, "h")])
def test_runtime_unit_keeps_numbers_readable(seconds, unit):
    assert plots._time_unit(seconds)[1] == unit


def test_plots_never_import_pyplot():
    # pyplot keeps global figure state; the module must work through Figure objects alone.
    code = "import sys, brainage.plots; print('matplotlib.pyplot' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def write_head(path: Path, size: float, seed: int) -> None:
    """A noisy ellipsoid of ``size`` (0..1) in a 3D image with 1.2 mm slices."""
    grid = np.stack(np.meshgrid(*(np.linspace(-1, 1, n) for n in (20, 24, 16)), indexing="ij"))
    data = (np.square(grid).sum(axis=0) < size**2) * 100.0 + np.random.default_rng(seed).normal(0, 5, (20, 24, 16))
    nib.save(nib.Nifti1Image(data.astype(np.float32), np.diag([1.0, 1.0, 1.2, 1.0])), path)


def test_youngest_and_oldest_shows_the_included_extremes(tmp_path):
    rows = []
    for index, (age, included) in enumerate([(30.0, True), (19.0, False), (71.5, True), (45.0, True)]):
        subject = f"IXI{index:03d}"
        row = {"subject": subject, "age": age, "included": included}
        for number, modality in enumerate(("T1", "PD", "MRA")):
            row[f"path_{modality}"] = str(tmp_path / f"{subject}-{modality}.nii.gz")
            write_head(tmp_path / f"{subject}-{modality}.nii.gz", 0.4 + age / 200, index * 3 + number)
        rows.append(row)
    out = tmp_path / "figure"
    out.mkdir()
    path = out / "youngest_oldest.png"
    plots.plot_youngest_and_oldest(pd.DataFrame(rows), path)
    assert_png_with_content(path)
    # The excluded 19-year-old is not the youngest shown: a missing file would have failed.
    Path(rows[1]["path_T1"]).unlink()
    plots.plot_youngest_and_oldest(pd.DataFrame(rows), path)


def test_youngest_and_oldest_needs_an_included_subject(tmp_path):
    inventory = pd.DataFrame({"subject": ["IXI001"], "age": [40.0], "included": [False]})
    with pytest.raises(ValueError, match="no included subject"):
        plots.plot_youngest_and_oldest(inventory, tmp_path / "figure.png")
    assert not list(tmp_path.iterdir())


def toy_subject() -> SubjectImages:
    """An ellipsoid brain with a vessel in PD space; the registered images share PD's grid."""
    shape = (32, 36, 24)
    grid = np.indices(shape).astype(float)
    centre = (np.array(shape) - 1) / 2
    radii = np.array(shape) * 0.4
    brain = (((grid - centre[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(axis=0) <= 1
    rng = np.random.default_rng(0)
    vessels = np.zeros(shape, np.float32)
    vessels[14:18, 6:30, 12] = 1
    pd_image = brain * (80.0 + 10 * np.cos(grid[0] / 2)) + rng.normal(0, 2, shape)
    t1 = brain * (60.0 + 10 * np.sin(grid[1] / 2)) + rng.normal(0, 2, shape)
    tof = brain * 30.0 + 100 * vessels + rng.normal(0, 2, shape)
    arrays = [a.astype(np.float32) for a in (pd_image, t1, tof, vessels, brain)]
    return SubjectImages("s1", *arrays, np.diag([3.0, 3.0, 4.0, 1.0]), (3.0, 3.0, 4.0))


@pytest.mark.parametrize("suffix", [".png", ".pdf"])
def test_qc_subject_figure(tmp_path, suffix):
    path = tmp_path / f"s1{suffix}"
    plots.plot_qc_subject(toy_subject(), path)
    if suffix == ".png":
        assert_png_with_content(path)
    else:
        assert_pdf(path)


def test_qc_gallery_shows_every_subject(tmp_path):
    images = []
    for index, size in enumerate((0.5, 0.7, 0.9)):
        images.append(tmp_path / f"s{index}_TOF.nii.gz")
        write_head(images[-1], size, index)
    out = tmp_path / "figure"
    out.mkdir()
    path = out / "gallery.png"
    plots.plot_qc_gallery(["s1", "s2", "s3"], images, ["30 y", "41 y", "67 y"], path)
    assert_png_with_content(path)
    with pytest.raises(ValueError, match="differ in number"):
        plots.plot_qc_gallery(["s1"], images[:2], ["30 y"], out / "wrong.png")
    assert list(out.iterdir()) == [path]


@pytest.mark.parametrize("suffix", [".png", ".pdf"])
def test_plot_split(tmp_path, suffix):
    ages = np.random.default_rng(7).uniform(20, 86, 200)
    manifest = pd.DataFrame({"subject": [f"IXI{i:03d}" for i in range(200)], "age": ages})
    split, table = make_split(manifest, "stratified", 50, 20, 10, seed=0, seeds=range(40))
    path = tmp_path / f"split{suffix}"
    plots.plot_split(table, split, path)
    if suffix == ".png":
        assert_png_with_content(path)
    else:
        assert_pdf(path)
        assert list(tmp_path.iterdir()) == [path]  # the atomic write left no temporary file
