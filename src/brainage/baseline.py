"""The classical baseline of each modality: block-averaged training arrays → PCA → ridge.

The brainageR / scikit-learn way of predicting age (issue #18), beside the networks and on
exactly their subjects and split, so that a network's MAE can be read against what a linear
model of the same arrays achieves in seconds on one CPU thread.

Feature map: each subject's training arrays of the modality's channels, read as the networks
read them (:class:`brainage.data.AgeDataset`: the split's rows joined to the manifest's
``tensor_<channel>`` columns by subject id), each averaged over blocks of ``downsample``³ voxels
and flattened, the channels concatenated. The grid is zero-padded at its far end to a multiple
of ``downsample``: zero is the arrays' background. No per-voxel standardization: T1 and TOF are
already z-scored inside each subject's brain and TOF_bin averages to a vessel fraction in [0, 1];
scaling every voxel to unit variance would weigh near-constant border voxels like brain ones (on
the demo's tune set it gained nothing overall: better on TOF, worse on TOF_bin and T1+TOF_bin).

Model: ``Pipeline(PCA(svd_solver="full"), Ridge)`` fitted on the training subjects. PCA keeps the
fewest components that explain a fraction (``components``) of the training variance; ``alphas``
are ridge penalties. Every pair of the grid is fitted and the lowest tune MAE chosen (the first in
grid order on ties: components outer, alphas inner, as the config lists them); the eval subjects
are only predicted. The full SVD and ridge's closed form draw no random numbers: the fit needs no
seed, and training replicates would repeat it, so the workflow fits it once per modality.
"""

from __future__ import annotations

import dataclasses
import pickle
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from brainage.data import AgeDataset
from brainage.io import atomic_path, write_table
from brainage.metrics import PREDICTION_COLUMNS, validate_predictions
from brainage.tensors import block_average
from brainage.vocabulary import SUBSETS, TRAIN, TUNE

SELECTION_COLUMNS: Final = ("components", "n_components", "alpha", "tune_mae", "selected")


@dataclasses.dataclass(frozen=True)
class RidgeParams:
    """``models.ridge.params`` of the config; config/schema.yaml checks them and
    tests/test_config.py pins its keys to these fields."""

    downsample: int  # block edge in voxels of the feature map
    components: Sequence[float]  # fractions of the training variance PCA keeps, in (0, 1)
    alphas: Sequence[float]  # ridge penalties


@dataclasses.dataclass(frozen=True)
class BaselineOutputs:
    """The files :func:`baseline_run` writes; the rule ``fit_baseline`` names them."""

    model: Path  # pickle: the fitted pipeline with the channels and downsample of its features
    selection: Path  # CSV, one row per candidate of the grid: SELECTION_COLUMNS
    predictions: Path  # CSV, one row per subject: PREDICTION_COLUMNS


@dataclasses.dataclass(frozen=True)
class BaselineFit:
    """What :func:`fit_baseline` returns."""

    pipeline: Pipeline  # the selected candidate, fitted on the training subjects
    selection: pd.DataFrame  # SELECTION_COLUMNS
    predictions: pd.DataFrame  # PREDICTION_COLUMNS, train then tune then eval


def feature_matrix(dataset: AgeDataset, downsample: int) -> np.ndarray:
    """One row per subject of ``dataset``, in its order: every channel block-averaged and
    flattened, the channels concatenated in the dataset's order."""
    rows = []
    grid = None
    for index, subject in enumerate(dataset.subjects):
        image = dataset[index][0].numpy()
        grid = grid or image.shape[1:]
        if image.shape[1:] != grid:
            files = ", ".join(map(str, dataset.paths[index]))
            raise ValueError(f"subject {subject}: {files} on grid {image.shape[1:]}, {dataset.subjects[0]}'s on {grid}")
        rows.append(np.concatenate([block_average(channel, downsample).ravel() for channel in image]))
    return np.stack(rows)


def fit_baseline(
    manifest: pd.DataFrame, split: pd.DataFrame, channels: Sequence[str], params: RidgeParams
) -> BaselineFit:
    """Fit every candidate of the grid on the training subjects, keep the lowest tune MAE and
    predict every subject of the split."""
    datasets = {subset: AgeDataset(manifest, split, subset, channels) for subset in SUBSETS}
    for subset in (TRAIN, TUNE):
        if len(datasets[subset]) == 0:
            raise ValueError(f"the split has no {subset!r} subjects")
    datasets = {subset: dataset for subset, dataset in datasets.items() if len(dataset)}
    features = {subset: feature_matrix(dataset, params.downsample) for subset, dataset in datasets.items()}
    # The ages as the networks see them (AgeDataset's float32), so both score against the same labels.
    ages = {subset: dataset.ages.astype(np.float64) for subset, dataset in datasets.items()}

    candidates: list[Pipeline] = []
    rows = []
    for components in params.components:
        pca = PCA(components, svd_solver="full")
        # fit_transform, as Pipeline.fit does: the candidates equal pipelines fitted whole.
        scores = pca.fit_transform(features[TRAIN])
        for alpha in params.alphas:
            candidate = Pipeline([("pca", pca), ("ridge", Ridge(alpha=alpha).fit(scores, ages[TRAIN]))])
            tune_mae = float(np.mean(np.abs(candidate.predict(features[TUNE]) - ages[TUNE])))
            candidates.append(candidate)
            rows.append(
                {"components": components, "n_components": pca.n_components_, "alpha": alpha, "tune_mae": tune_mae}
            )
    selection = pd.DataFrame(rows, columns=list(SELECTION_COLUMNS[:-1]))
    best = int(np.argmin(selection["tune_mae"].to_numpy()))
    selection["selected"] = selection.index == best
    pipeline = candidates[best]

    predictions = pd.concat(
        [
            pd.DataFrame(
                {
                    "subject": dataset.subjects,
                    "set": subset,
                    "age": ages[subset],
                    "predicted": pipeline.predict(features[subset]),
                }
            )
            for subset, dataset in datasets.items()
        ],
        ignore_index=True,
    )[list(PREDICTION_COLUMNS)]
    validate_predictions(predictions)
    return BaselineFit(pipeline, selection, predictions)


def baseline_run(
    manifest: pd.DataFrame,
    split: pd.DataFrame,
    channels: Sequence[str],
    params: Mapping[str, Any],
    outputs: BaselineOutputs,
    threads: int,
    log: Callable[[str], None] = print,
) -> None:
    """:func:`fit_baseline` with ``threads`` BLAS threads, then write ``outputs``, each atomically."""
    start = time.perf_counter()
    ridge = RidgeParams(**params)
    # A fixed thread count also fixes the order of BLAS's floating-point sums.
    with threadpool_limits(limits=threads):
        fit = fit_baseline(manifest, split, channels, ridge)
    chosen = fit.selection[fit.selection["selected"]].iloc[0]
    log(
        f"ridge on {'+'.join(channels)}: {fit.pipeline.named_steps['pca'].n_features_in_:,} features, "
        f"{len(fit.selection)} candidates in {time.perf_counter() - start:.1f} s; selected components "
        f"{chosen['components']:g} ({chosen['n_components']} kept), alpha {chosen['alpha']:g}: "
        f"tune MAE {chosen['tune_mae']:.3f}"
    )
    write_table(fit.predictions, outputs.predictions)
    write_table(fit.selection, outputs.selection)
    with atomic_path(outputs.model) as tmp:
        tmp.write_bytes(
            pickle.dumps({"pipeline": fit.pipeline, "channels": list(channels), "downsample": ridge.downsample})
        )
