"""Evaluation of brain-age predictions: metrics, intervals, bias correction, comparisons.

Every run (one modality × model) writes a ``predictions.csv`` with columns subject, set
(train, tune or eval), age and predicted. Headline numbers are computed on the eval set only;
the train and tune rows are used for the things that must not see the eval set (the
bias-correction fit, the predict-the-mean reference).

A run is keyed by ``(modality, model)`` throughout, and mappings of runs keep their insertion
order so tables and figures follow the order of the workflow's config. A run trained several
times with different seeds (replicates) is keyed by ``(modality, model, replicate)`` where the
replicates matter: the headline numbers are one replicate's, and :func:`replicate_maes` gives
the spread over all of them.

Cross-validation (:func:`out_of_fold`) turns k fold runs into one predictions table in the same
form, every subject's held-out prediction labelled eval, so the same metrics and comparisons
apply to it; :func:`design_comparison` sets the two designs' detectable differences side by side.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from brainage.vocabulary import EVAL, SUBSETS, TRAIN, TUNE

RunKey = tuple[str, str]
"""``(modality, model)``, e.g. ``("T1+TOF_bin", "sfcn")``."""
ReplicateKey = tuple[str, str, int]
"""``(modality, model, replicate)``."""
FloatArray = NDArray[np.float64]

PREDICTION_COLUMNS: Final = ("subject", "set", "age", "predicted")

TABLE_COLUMNS: Final = (
    "modality",
    "model",
    "n_eval",
    "mae",
    "mae_lo",
    "mae_hi",
    "n_replicates",
    "mae_replicate_mean",
    "mae_replicate_sd",
    "rmse",
    "pearson_r",
    "r_lo",
    "r_hi",
    "r2",
    "mean_signed_error",
    "gap_age_spearman",
    "gap_age_spearman_p",
    "mae_corrected",
    "gap_age_spearman_corrected",
    "bias_slope",
    "bias_intercept",
    "best_epoch",
)
REPLICATE_COLUMNS: Final = ("modality", "model", "replicate", "mae")
COMPARISON_COLUMNS: Final = (
    "model",
    "modality_a",
    "modality_b",
    "n",
    "mae_a",
    "mae_b",
    "difference_lo",
    "difference_hi",
    "detectable_difference",
    "statistic",
    "p_value",
    "p_holm",
)
OUT_OF_FOLD_COLUMNS: Final = (
    *PREDICTION_COLUMNS,
    "fold",
    "bias_slope",
    "bias_intercept",
    "predicted_corrected",
    "gap",
    "gap_corrected",
)
CROSSVAL_COLUMNS: Final = (
    "modality",
    "model",
    "n",
    "mae",
    "mae_lo",
    "mae_hi",
    "folds",
    "fold_mae_mean",
    "fold_mae_sd",
    "pearson_r",
    "mae_corrected",
    "gap_age_spearman_corrected",
)
FOLD_MAE_COLUMNS: Final = ("modality", "model", "fold", "mae")
DESIGN_COLUMNS: Final = (
    "model",
    "modality_a",
    "modality_b",
    "n_split",
    "detectable_split",
    "n_crossval",
    "detectable_crossval",
    "ratio",
)
# Power analysis of the paired comparisons: two-sided tests at ALPHA, detected with POWER.
ALPHA: Final = 0.05
POWER: Final = 0.8
BENCHMARK_COLUMNS: Final = ("rule", "job", "s", "max_rss_mb", "cpu_time")
BENCHMARK_SUMMARY_COLUMNS: Final = ("rule", "jobs", "total_s", "mean_s", "max_s", "max_rss_mb")

# Keys of :func:`reference_lines`, read by the plots.
PREDICT_MEAN_MAE: Final = "predict_mean_mae"
ORACLE_MAE: Final = "oracle_mae"


def _as_pair(age: ArrayLike, predicted: ArrayLike, minimum: int = 3) -> tuple[FloatArray, FloatArray]:
    """Return both inputs as finite 1D float arrays of equal length, or raise ValueError."""
    a = np.asarray(age, dtype=float).ravel()
    p = np.asarray(predicted, dtype=float).ravel()
    if a.shape != p.shape:
        raise ValueError(f"age and predicted differ in length: {a.size} vs {p.size}")
    if a.size < minimum:
        raise ValueError(f"need at least {minimum} subjects, got {a.size}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(p))):
        raise ValueError("age and predicted must be finite (found NaN or infinity)")
    return a, p


def regression_metrics(age: ArrayLike, predicted: ArrayLike) -> dict[str, float]:
    """Point metrics of predicted against chronological age.

    Besides accuracy (mae, rmse, pearson_r, r2 with sklearn's definition: 1 − SS_res/SS_tot
    around the mean true age) this reports the two symptoms of regression to the mean that
    brain-age papers are judged on: the mean signed error (predicted − age) and the Spearman
    correlation of the brain-age gap with age, with its p-value.
    """
    a, p = _as_pair(age, predicted)
    gap = p - a
    spearman = stats.spearmanr(gap, a)
    return {
        "mae": float(np.mean(np.abs(gap))),
        "rmse": float(np.sqrt(np.mean(gap**2))),
        "pearson_r": float(np.corrcoef(a, p)[0, 1]),
        "r2": float(1.0 - np.sum(gap**2) / np.sum((a - a.mean()) ** 2)),
        "mean_signed_error": float(gap.mean()),
        "gap_age_spearman": float(spearman.statistic),
        "gap_age_spearman_p": float(spearman.pvalue),
    }


def bootstrap_intervals(
    age: ArrayLike,
    predicted: ArrayLike,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals for MAE and Pearson r, resampling subjects with replacement.

    The seed makes intervals reproducible between reruns of the workflow. A resample that
    happens to be constant has no correlation; such resamples are left out of the r interval
    rather than failing the run (they only occur for a handful of subjects).
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be positive, got {n_resamples}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")
    a, p = _as_pair(age, predicted)
    rng = np.random.default_rng(seed)
    index = rng.integers(0, a.size, size=(n_resamples, a.size))
    ra, rp = a[index], p[index]
    maes = np.mean(np.abs(rp - ra), axis=1)
    ca = ra - ra.mean(axis=1, keepdims=True)
    cp = rp - rp.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rs = np.sum(ca * cp, axis=1) / np.sqrt(np.sum(ca**2, axis=1) * np.sum(cp**2, axis=1))
    tail = 100.0 * (1.0 - level) / 2.0
    bounds = [tail, 100.0 - tail]
    mae_lo, mae_hi = np.percentile(maes, bounds)
    r_lo, r_hi = np.nanpercentile(rs, bounds) if np.any(np.isfinite(rs)) else (np.nan, np.nan)
    return {"mae": (float(mae_lo), float(mae_hi)), "pearson_r": (float(r_lo), float(r_hi))}


def fit_bias_correction(age: ArrayLike, predicted: ArrayLike) -> tuple[float, float]:
    """Fit the age dependence of the brain-age gap, gap = slope·age + intercept (Beheshti 2019).

    Fit this on training/tune predictions only: fitting it on the eval set would let the eval
    ages leak into the corrected eval predictions and flatter them.
    """
    a, p = _as_pair(age, predicted)
    fit = stats.linregress(a, p - a)
    return float(fit.slope), float(fit.intercept)


def apply_bias_correction(age: ArrayLike, predicted: ArrayLike, slope: float, intercept: float) -> FloatArray:
    """Remove the fitted age-dependent gap: predicted − (slope·age + intercept)."""
    a, p = _as_pair(age, predicted, minimum=0)
    return p - (slope * a + intercept)


def validate_predictions(predictions: pd.DataFrame) -> None:
    """Raise ValueError unless ``predictions`` is a usable predictions table.

    Checked: the columns, the set labels, finite ages and predictions, and each subject
    appearing once, since a duplicated subject would silently weigh double.
    """
    missing = [c for c in PREDICTION_COLUMNS if c not in predictions.columns]
    if missing:
        raise ValueError(f"predictions lack columns {missing}")
    unknown = sorted(set(predictions["set"]) - set(SUBSETS))
    if unknown:
        raise ValueError(f"predictions have unknown set labels {unknown}; expected {list(SUBSETS)}")
    duplicated = predictions["subject"][predictions["subject"].duplicated()]
    if len(duplicated):
        names = sorted(map(str, duplicated.unique()))
        raise ValueError(f"subjects appear more than once in predictions: {names}")
    values = predictions[["age", "predicted"]].to_numpy(dtype=float)
    if not np.all(np.isfinite(values)):
        raise ValueError("predictions contain NaN or infinite ages or predictions")


def _rows(predictions: pd.DataFrame, *sets: str) -> pd.DataFrame:
    rows = predictions[predictions["set"].isin(sets)]
    if rows.empty:
        raise ValueError(f"predictions have no rows in set {' or '.join(sets)}")
    return rows


def run_metrics(predictions: pd.DataFrame, n_resamples: int = 1000, seed: int = 0) -> dict[str, float]:
    """All numbers reported for one run: eval metrics, bootstrap intervals and corrected metrics.

    The bias correction is fitted on the train and tune rows and applied to the eval rows; the
    corrected MAE is reported beside the uncorrected one, since correction with the true age
    usually looks better and is not available to a deployed model in the same way.
    """
    validate_predictions(predictions)
    evaluation = _rows(predictions, EVAL)
    fit_rows = _rows(predictions, TRAIN, TUNE)
    age, predicted = evaluation["age"].to_numpy(float), evaluation["predicted"].to_numpy(float)
    intervals = bootstrap_intervals(age, predicted, n_resamples=n_resamples, seed=seed)
    slope, intercept = fit_bias_correction(fit_rows["age"], fit_rows["predicted"])
    corrected = regression_metrics(age, apply_bias_correction(age, predicted, slope, intercept))
    return {
        "n_eval": len(evaluation),
        **regression_metrics(age, predicted),
        "mae_lo": intervals["mae"][0],
        "mae_hi": intervals["mae"][1],
        "r_lo": intervals["pearson_r"][0],
        "r_hi": intervals["pearson_r"][1],
        "mae_corrected": corrected["mae"],
        "gap_age_spearman_corrected": corrected["gap_age_spearman"],
        "bias_slope": slope,
        "bias_intercept": intercept,
    }


def best_epoch(history: pd.DataFrame) -> int:
    """The epoch with the lowest tune MAE (the first one on ties): the checkpoint model selection keeps."""
    if history.empty:
        raise ValueError("history is empty")
    return int(history["epoch"].iloc[int(np.argmin(history["tune_mae"].to_numpy(float)))])


def replicate_maes(runs: Mapping[ReplicateKey, pd.DataFrame]) -> pd.DataFrame:
    """Eval MAE of every replicate of every run: the columns of :data:`REPLICATE_COLUMNS`."""
    rows = []
    for (modality, model, replicate), predictions in runs.items():
        mae = float(_absolute_errors(predictions).mean())
        rows.append({"modality": modality, "model": model, "replicate": int(replicate), "mae": mae})
    return pd.DataFrame(rows, columns=list(REPLICATE_COLUMNS))


def metrics_table(
    runs: Mapping[RunKey, pd.DataFrame],
    n_resamples: int = 1000,
    seed: int = 0,
    histories: Mapping[RunKey, pd.DataFrame] | None = None,
    replicates: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per (modality, model) with the columns of :data:`TABLE_COLUMNS`, in run order.

    Every run is bootstrapped with the same seed, so a run's intervals do not depend on which
    other runs are in the table or their order. ``best_epoch`` is empty for runs without a
    history. ``replicates`` (from :func:`replicate_maes`) gives each run's count, mean and SD
    of eval MAE over its replicates; without it, or for a run trained once, the run counts as
    one replicate with an empty SD (an SD of one value is not a measure of noise).
    """
    rows = []
    for (modality, model), predictions in runs.items():
        history = None if histories is None else histories.get((modality, model))
        row = {"modality": modality, "model": model, **run_metrics(predictions, n_resamples=n_resamples, seed=seed)}
        own = (
            None
            if replicates is None
            else replicates[(replicates["modality"] == modality) & (replicates["model"] == model)]
        )
        maes = pd.Series([row["mae"]]) if own is None or own.empty else own["mae"].astype(float)
        rows.append(
            {
                **row,
                "n_replicates": len(maes),
                "mae_replicate_mean": float(maes.mean()),
                "mae_replicate_sd": float(maes.std(ddof=1)) if len(maes) > 1 else math.nan,
                "best_epoch": pd.NA if history is None else best_epoch(history),
            }
        )
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    return table.astype({"n_eval": "int64", "n_replicates": "int64", "best_epoch": "Int64"})


def _absolute_errors(predictions: pd.DataFrame) -> pd.Series:
    """Absolute eval errors indexed by subject id."""
    validate_predictions(predictions)
    evaluation = _rows(predictions, EVAL)
    return (evaluation["predicted"] - evaluation["age"]).abs().set_axis(evaluation["subject"].to_numpy())


def holm(p_values: ArrayLike) -> FloatArray:
    """Holm–Bonferroni adjusted p-values: controls the family-wise error over all comparisons."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    scaled = p[order] * (p.size - np.arange(p.size))
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted


def paired_comparisons(runs: Mapping[RunKey, pd.DataFrame]) -> pd.DataFrame:
    """Wilcoxon signed-rank tests of absolute eval errors between modalities, within each model.

    Errors are paired by subject id, never by row position, and the eval subject sets must be
    identical, otherwise the test would compare different people. ``p_holm`` adjusts all
    comparisons in the table together (every modality pair of every model). difference_lo and
    difference_hi bound mae_a − mae_b (the mean paired difference of absolute errors) with a
    95% t interval; detectable_difference is :func:`detectable_difference` of those differences.
    """
    rows = []
    models = dict.fromkeys(model for _, model in runs)
    for model in models:
        modalities = [modality for modality, m in runs if m == model]
        for modality_a, modality_b in itertools.combinations(modalities, 2):
            errors_a = _absolute_errors(runs[(modality_a, model)])
            errors_b = _absolute_errors(runs[(modality_b, model)])
            if set(errors_a.index) != set(errors_b.index):
                only_a = sorted(map(str, set(errors_a.index) - set(errors_b.index)))
                only_b = sorted(map(str, set(errors_b.index) - set(errors_a.index)))
                raise ValueError(
                    f"{model}: eval subjects differ between {modality_a} and {modality_b} "
                    f"(only in {modality_a}: {only_a}; only in {modality_b}: {only_b})"
                )
            errors_b = errors_b.loc[errors_a.index]
            differences = errors_a.to_numpy() - errors_b.to_numpy()
            half_width = stats.t.ppf(1 - ALPHA / 2, len(differences) - 1) * _standard_error(differences)
            if np.all(differences == 0):
                # Identical errors carry no evidence of a difference; scipy would divide by zero.
                statistic, p_value = 0.0, 1.0
            else:
                result = stats.wilcoxon(errors_a.to_numpy(), errors_b.to_numpy())
                statistic, p_value = float(result.statistic), float(result.pvalue)
            rows.append(
                {
                    "model": model,
                    "modality_a": modality_a,
                    "modality_b": modality_b,
                    "n": len(errors_a),
                    "mae_a": float(errors_a.mean()),
                    "mae_b": float(errors_b.mean()),
                    "difference_lo": float(differences.mean() - half_width),
                    "difference_hi": float(differences.mean() + half_width),
                    "detectable_difference": detectable_difference(differences),
                    "statistic": statistic,
                    "p_value": p_value,
                }
            )
    table = pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))
    table["p_holm"] = holm(table["p_value"].to_numpy(float))
    return table


def _standard_error(values: FloatArray) -> float:
    return float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan


def detectable_difference(differences: ArrayLike, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true mean paired difference a two-sided test at ``alpha`` finds with ``power``.

    (z₁₋α/₂ + z_power) · SD(differences) / √n: the normal approximation of the paired t-test,
    given the spread of the observed per-subject differences. The Wilcoxon test's efficiency
    relative to the t-test is 0.955 for normal differences (at least 0.864 for any), so for it the
    number is a slight underestimate. It shrinks with √n: the same subjects' errors measured on
    four times as many subjects halve it.
    """
    values = np.asarray(differences, dtype=float)
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return float(z * _standard_error(values))


def out_of_fold(folds: Mapping[int, pd.DataFrame]) -> pd.DataFrame:
    """One (modality, model)'s cross-validation runs as one table: each subject's held-out prediction.

    ``folds`` maps fold number to that fold run's predictions (its held-out subjects labelled
    eval). Each fold's bias correction is fitted on its own train and tune rows only, so a
    subject's corrected age never depends on a held-out age, its own or another's. Returns the
    columns :data:`OUT_OF_FOLD_COLUMNS`, set eval on every row, sorted by subject; raises
    ValueError when a subject is held out in more than one fold.
    """
    tables = []
    for fold, predictions in folds.items():
        validate_predictions(predictions)
        fit_rows = _rows(predictions, TRAIN, TUNE)
        slope, intercept = fit_bias_correction(fit_rows["age"], fit_rows["predicted"])
        held_out = _rows(predictions, EVAL)[list(PREDICTION_COLUMNS)]
        corrected = apply_bias_correction(held_out["age"], held_out["predicted"], slope, intercept)
        tables.append(
            held_out.assign(fold=int(fold), bias_slope=slope, bias_intercept=intercept, predicted_corrected=corrected)
        )
    if not tables:
        raise ValueError("no folds to join")
    table = pd.concat(tables, ignore_index=True)
    repeated = table["subject"][table["subject"].duplicated()]
    if len(repeated):
        raise ValueError(f"subjects held out in more than one fold: {sorted(map(str, repeated.unique()))}")
    table["gap"] = table["predicted"] - table["age"]
    table["gap_corrected"] = table["predicted_corrected"] - table["age"]
    return table.sort_values("subject", ignore_index=True)[list(OUT_OF_FOLD_COLUMNS)]


def fold_maes(runs: Mapping[RunKey, pd.DataFrame]) -> pd.DataFrame:
    """Every fold's MAE of every run, from :func:`out_of_fold` tables: columns :data:`FOLD_MAE_COLUMNS`."""
    rows = [
        {"modality": modality, "model": model, "fold": int(fold), "mae": float(mae)}
        for (modality, model), table in runs.items()
        for fold, mae in (table["predicted"] - table["age"]).abs().groupby(table["fold"]).mean().items()
    ]
    return pd.DataFrame(rows, columns=list(FOLD_MAE_COLUMNS))


def crossval_table(runs: Mapping[RunKey, pd.DataFrame], n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per (modality, model), from :func:`out_of_fold` tables: the out-of-fold MAE with its
    subject-level bootstrap interval, the spread of the folds' MAEs, and the corrected MAE.
    Columns :data:`CROSSVAL_COLUMNS`, in run order."""
    rows = []
    every_fold = fold_maes(runs)
    for (modality, model), table in runs.items():
        age, predicted = table["age"].to_numpy(float), table["predicted"].to_numpy(float)
        intervals = bootstrap_intervals(age, predicted, n_resamples=n_resamples, seed=seed)
        scores = regression_metrics(age, predicted)
        folds = every_fold[(every_fold["modality"] == modality) & (every_fold["model"] == model)]["mae"]
        corrected = regression_metrics(age, table["predicted_corrected"])
        rows.append(
            {
                "modality": modality,
                "model": model,
                "n": len(table),
                "mae": scores["mae"],
                "mae_lo": intervals["mae"][0],
                "mae_hi": intervals["mae"][1],
                "folds": len(folds),
                "fold_mae_mean": float(folds.mean()),
                "fold_mae_sd": float(folds.std(ddof=1)) if len(folds) > 1 else math.nan,
                "pearson_r": scores["pearson_r"],
                "mae_corrected": corrected["mae"],
                "gap_age_spearman_corrected": corrected["gap_age_spearman"],
            }
        )
    return pd.DataFrame(rows, columns=list(CROSSVAL_COLUMNS)).astype({"n": "int64", "folds": "int64"})


def design_comparison(split: pd.DataFrame, crossval: pd.DataFrame) -> pd.DataFrame:
    """The detectable difference of every modality comparison in the single split and in
    cross-validation, side by side (both :func:`paired_comparisons` tables); ratio is the
    split's over cross-validation's, how many times smaller a difference cross-validation finds.
    Columns :data:`DESIGN_COLUMNS`."""
    keys = ["model", "modality_a", "modality_b"]
    columns = {"n": "n_{}", "detectable_difference": "detectable_{}"}
    table = pd.merge(
        split[[*keys, *columns]].rename(columns={k: v.format("split") for k, v in columns.items()}),
        crossval[[*keys, *columns]].rename(columns={k: v.format("crossval") for k, v in columns.items()}),
        on=keys,
        how="inner",
        validate="one_to_one",
    )
    table["ratio"] = table["detectable_split"] / table["detectable_crossval"]
    return table[list(DESIGN_COLUMNS)]


def reference_lines(predictions: pd.DataFrame, ground_truth: pd.DataFrame | None = None) -> dict[str, float]:
    """MAEs on the eval set that any model should be read against.

    ``predict_mean_mae``: predicting the mean train-set age for everyone, the floor of
    usefulness. ``oracle_mae`` (only with a synthetic ground truth of subject, bio_age): the
    error of a perfect model of biological age, mean |bio_age − age|, which no model can beat
    on average because the age label itself is off by the biological gap.
    """
    validate_predictions(predictions)
    evaluation = _rows(predictions, EVAL)
    train_mean = float(_rows(predictions, TRAIN)["age"].mean())
    eval_age = evaluation["age"].to_numpy(float)
    lines = {
        "n_eval": len(evaluation),
        "train_mean_age": train_mean,
        PREDICT_MEAN_MAE: float(np.mean(np.abs(eval_age - train_mean))),
    }
    if ground_truth is not None:
        bio_age = ground_truth.astype({"subject": str}).set_index("subject")["bio_age"]
        subjects = evaluation["subject"].astype(str)
        missing = sorted(set(subjects) - set(bio_age.index))
        if missing:
            raise ValueError(f"ground truth lacks eval subjects {missing}")
        # Scored against the same age labels as the models, so the lines are comparable.
        lines[ORACLE_MAE] = float(np.mean(np.abs(bio_age.loc[subjects].to_numpy(float) - eval_age)))
    return lines


def _benchmark_job(path: Path) -> tuple[str, str]:
    """(rule, job) from ``.../benchmarks/<rule>/<job parts>.tsv``; nested folders stay in the job."""
    parts = path.parts
    # Only folders that leave room for a rule folder below them count as the benchmarks root.
    roots = [i for i, part in enumerate(parts[:-2]) if part == "benchmarks"]
    if not roots:
        raise ValueError(f"benchmark path {path} is not of the form .../benchmarks/<rule>/<job>.tsv")
    rule, *folders = parts[roots[-1] + 1 : -1]
    return rule, "/".join([*folders, path.stem])


def benchmark_table(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Parse Snakemake ``benchmark:`` files into rule, job, s, max_rss_mb, cpu_time.

    Snakemake writes "NA" or "-" where a value could not be measured; those become NaN. A file
    with several rows (``repeat()``) is reduced to its mean so each job counts once.
    """
    rows = []
    for path in map(Path, paths):
        rule, job = _benchmark_job(path)
        measured = pd.read_csv(path, sep="\t", na_values=["NA", "-"])
        missing = [c for c in ("s", "max_rss", "cpu_time") if c not in measured.columns]
        if missing:
            raise ValueError(f"benchmark file {path} lacks columns {missing}")
        means = measured[["s", "max_rss", "cpu_time"]].astype(float).mean()
        rows.append(
            {
                "rule": rule,
                "job": job,
                "s": means["s"],
                "max_rss_mb": means["max_rss"],
                "cpu_time": means["cpu_time"],
            }
        )
    return pd.DataFrame(rows, columns=list(BENCHMARK_COLUMNS)).astype(
        {"s": float, "max_rss_mb": float, "cpu_time": float}
    )


def summarize_benchmarks(benchmarks: pd.DataFrame) -> pd.DataFrame:
    """Per rule: jobs, total/mean/max wall seconds and peak memory, largest total first."""
    summary = (
        benchmarks.groupby("rule", sort=False)
        .agg(
            jobs=("job", "size"),
            total_s=("s", "sum"),
            mean_s=("s", "mean"),
            max_s=("s", "max"),
            max_rss_mb=("max_rss_mb", "max"),
        )
        .reset_index()
    )
    return summary.sort_values("total_s", ascending=False, kind="stable", ignore_index=True)[
        list(BENCHMARK_SUMMARY_COLUMNS)
    ]
