"""The classical baseline: scikit-learn's numbers, chosen on tune only, subjects joined by id."""

from __future__ import annotations

import dataclasses
import itertools
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.decomposition import PCA
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline

from brainage.baseline import SELECTION_COLUMNS, BaselineOutputs, RidgeParams, baseline_run, fit_baseline
from brainage.metrics import PREDICTION_COLUMNS, validate_predictions

SHAPE = (8, 10, 8)
CHANNELS = ["T1", "TOF_bin"]
PARAMS = RidgeParams(downsample=2, components=[0.5, 0.9], alphas=[0.1, 10.0, 1000.0])
SETS = {"train": 24, "tune": 8, "eval": 8}


def make_cohort(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Subjects whose T1 carries their age along one fixed pattern, plus noise, and a random
    vessel mask. Ages are multiples of 0.5, exact in float32 (AgeDataset's ages). The manifest's
    rows are shuffled, with an index that is not 0..n-1."""
    rng = np.random.default_rng(0)
    pattern, ageing = rng.normal(size=SHAPE), rng.normal(size=SHAPE)
    n = sum(SETS.values())
    ages = 20.0 + 0.5 * rng.permutation(np.arange(0, 120))[:n]
    rows = []
    for i, age in enumerate(ages):
        subject = f"IXI{i:03d}"
        t1 = pattern + (age - 50.0) / 20.0 * ageing + rng.normal(0.0, 0.5, SHAPE)
        np.save(root / f"{subject}_T1.npy", t1.astype(np.float16))
        np.save(root / f"{subject}_TOF_bin.npy", (rng.random(SHAPE) > 0.9).astype(np.uint8))
        rows.append(
            {
                "subject": subject,
                "age": age,
                "tensor_T1": str(root / f"{subject}_T1.npy"),
                "tensor_TOF_bin": str(root / f"{subject}_TOF_bin.npy"),
            }
        )
    manifest = pd.DataFrame(rows, index=rng.permutation(n) + 100).sample(frac=1, random_state=1)
    sets = [name for name, size in SETS.items() for _ in range(size)]
    split = pd.DataFrame({"subject": [r["subject"] for r in rows], "set": sets, "age": ages})
    return manifest, split.sample(frac=1, random_state=2)


def hand_features(manifest: pd.DataFrame, subjects: pd.Series) -> np.ndarray:
    """The feature map written out independently: the mean of the 8 voxels of every 2×2×2 block."""
    paths = manifest.set_index("subject")
    rows = []
    for subject in subjects:
        blocks = []
        for channel in CHANNELS:
            volume = np.load(paths.loc[subject, f"tensor_{channel}"]).astype(np.float64)
            shifts = itertools.product(range(2), repeat=3)
            blocks.append((sum(volume[i::2, j::2, k::2] for i, j, k in shifts) / 8).ravel())
        rows.append(np.concatenate(blocks))
    return np.stack(rows)


def test_predictions_equal_a_hand_built_scikit_learn_pipeline(tmp_path: Path) -> None:
    manifest, split = make_cohort(tmp_path)
    fit = fit_baseline(manifest, split, CHANNELS, PARAMS)
    rows = {name: split[split["set"] == name] for name in SETS}
    features = {name: hand_features(manifest, rows[name]["subject"]) for name in SETS}

    tune_maes = []
    for components, alpha in itertools.product(PARAMS.components, PARAMS.alphas):
        pipeline = make_pipeline(PCA(components, svd_solver="full"), Ridge(alpha=alpha))
        pipeline.fit(features["train"], rows["train"]["age"])
        tune_maes.append(np.mean(np.abs(pipeline.predict(features["tune"]) - rows["tune"]["age"])))
    assert list(fit.selection.columns) == list(SELECTION_COLUMNS)
    np.testing.assert_allclose(fit.selection["tune_mae"], tune_maes, rtol=1e-10)
    assert fit.selection["selected"].tolist() == [i == np.argmin(tune_maes) for i in range(len(tune_maes))]

    chosen = fit.selection[fit.selection["selected"]].iloc[0]
    pipeline = make_pipeline(PCA(chosen["components"], svd_solver="full"), Ridge(alpha=chosen["alpha"]))
    pipeline.fit(features["train"], rows["train"]["age"])
    validate_predictions(fit.predictions)
    assert list(fit.predictions.columns) == list(PREDICTION_COLUMNS)
    for name in SETS:
        mine = fit.predictions[fit.predictions["set"] == name]
        assert mine["subject"].tolist() == rows[name]["subject"].tolist()
        np.testing.assert_array_equal(mine["age"], rows[name]["age"])
        np.testing.assert_allclose(mine["predicted"], pipeline.predict(features[name]), rtol=1e-10)


def test_eval_ages_choose_nothing(tmp_path: Path) -> None:
    manifest, split = make_cohort(tmp_path)
    changed = split.copy()
    is_eval = changed["set"] == "eval"
    changed.loc[is_eval, "age"] = changed.loc[is_eval, "age"].to_numpy()[::-1] + 30.0
    fit, refit = fit_baseline(manifest, split, CHANNELS, PARAMS), fit_baseline(manifest, changed, CHANNELS, PARAMS)
    pd.testing.assert_frame_equal(fit.selection, refit.selection)
    pd.testing.assert_frame_equal(fit.predictions.drop(columns="age"), refit.predictions.drop(columns="age"))


def test_subjects_are_joined_by_id_not_by_row(tmp_path: Path) -> None:
    manifest, split = make_cohort(tmp_path)
    shuffled = manifest.sample(frac=1, random_state=7).reset_index(drop=True)
    assert shuffled["subject"].tolist() != manifest["subject"].tolist()
    fit, refit = fit_baseline(manifest, split, CHANNELS, PARAMS), fit_baseline(shuffled, split, CHANNELS, PARAMS)
    pd.testing.assert_frame_equal(fit.predictions, refit.predictions)


def test_age_signal_is_learnt_far_below_predicting_the_mean(tmp_path: Path) -> None:
    manifest, split = make_cohort(tmp_path)
    fit = fit_baseline(manifest, split, CHANNELS, PARAMS)
    train_mean = split.loc[split["set"] == "train", "age"].mean()
    mean_mae = (split.loc[split["set"] == "tune", "age"] - train_mean).abs().mean()
    assert fit.selection["tune_mae"].min() < 0.3 * mean_mae


def test_run_writes_predictions_selection_and_a_model_that_predicts_them(tmp_path: Path) -> None:
    manifest, split = make_cohort(tmp_path)
    outputs = BaselineOutputs(tmp_path / "out" / "model.pkl", tmp_path / "out" / "sel.csv", tmp_path / "out" / "p.csv")
    messages: list[str] = []
    baseline_run(manifest, split, CHANNELS, dataclasses.asdict(PARAMS), outputs, threads=1, log=messages.append)
    predictions = pd.read_csv(outputs.predictions, dtype={"subject": str})
    validate_predictions(predictions)
    assert pd.read_csv(outputs.selection)["selected"].sum() == 1
    saved = pickle.loads(outputs.model.read_bytes())
    assert saved["channels"] == CHANNELS and saved["downsample"] == PARAMS.downsample
    features = hand_features(manifest, predictions["subject"])
    # The CSV keeps 6 significant digits.
    np.testing.assert_allclose(saved["pipeline"].predict(features), predictions["predicted"], rtol=1e-5)
    assert "selected components" in messages[0]
    assert sorted(p.name for p in outputs.model.parent.iterdir()) == ["model.pkl", "p.csv", "sel.csv"]


def test_a_split_without_tune_subjects_is_refused(tmp_path: Path) -> None:
    manifest, split = make_cohort(tmp_path)
    with pytest.raises(ValueError, match="no 'tune' subjects"):
        fit_baseline(manifest, split[split["set"] != "tune"], CHANNELS, PARAMS)
