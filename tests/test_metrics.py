"""Tests of brainage.metrics against scipy/sklearn and of its leakage and pairing guarantees."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from brainage import io, metrics

MODALITIES = ("T1", "TOF", "TOF_bin", "T1+TOF_bin")
MODELS = ("cnn3d", "highresnet", "sfcn")


def make_predictions(seed: int, n_train: int = 40, n_tune: int = 10, n_eval: int = 30) -> pd.DataFrame:
    """A predictions table with regression to the mean, like a real brain-age model."""
    rng = np.random.default_rng(seed)
    n = n_train + n_tune + n_eval
    age = rng.uniform(20, 86, n)
    predicted = 0.7 * age + 0.3 * 50 + rng.normal(0, 5, n)
    return pd.DataFrame(
        {
            "subject": [f"IXI{i:03d}" for i in range(n)],
            "set": ["train"] * n_train + ["tune"] * n_tune + ["eval"] * n_eval,
            "age": age,
            "predicted": predicted,
        }
    )


def make_runs(modalities=MODALITIES, models=MODELS) -> dict[tuple[str, str], pd.DataFrame]:
    return {key: make_predictions(seed) for seed, key in enumerate(itertools.product(modalities, models))}


@pytest.fixture
def pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    age = rng.uniform(20, 86, 60)
    return age, age + rng.normal(2, 6, 60)


def test_regression_metrics_match_scipy_and_sklearn(pair):
    age, predicted = pair
    result = metrics.regression_metrics(age, predicted)
    spearman = stats.spearmanr(predicted - age, age)
    assert result["mae"] == pytest.approx(mean_absolute_error(age, predicted))
    assert result["rmse"] == pytest.approx(np.sqrt(mean_squared_error(age, predicted)))
    assert result["r2"] == pytest.approx(r2_score(age, predicted))
    assert result["pearson_r"] == pytest.approx(stats.pearsonr(age, predicted).statistic)
    assert result["mean_signed_error"] == pytest.approx(np.mean(predicted - age))
    assert result["gap_age_spearman"] == pytest.approx(spearman.statistic)
    assert result["gap_age_spearman_p"] == pytest.approx(spearman.pvalue)


def test_r2_uses_true_age_as_reference_not_symmetric(pair):
    # sklearn's r2_score(y_true, y_pred) is not symmetric; swapping the arguments must matter.
    age, predicted = pair
    assert metrics.regression_metrics(age, predicted)["r2"] != pytest.approx(r2_score(predicted, age))


@pytest.mark.parametrize(
    ("age", "predicted", "message"),
    [
        ([1.0, 2.0, 3.0], [1.0, 2.0], "differ in length"),
        ([1.0, 2.0], [1.0, 2.0], "at least 3"),
        ([1.0, np.nan, 3.0], [1.0, 2.0, 3.0], "finite"),
    ],
)
def test_regression_metrics_rejects_bad_input(age, predicted, message):
    with pytest.raises(ValueError, match=message):
        metrics.regression_metrics(age, predicted)


def test_bootstrap_is_deterministic_and_contains_point_estimate(pair):
    age, predicted = pair
    first = metrics.bootstrap_intervals(age, predicted, n_resamples=500, seed=7)
    again = metrics.bootstrap_intervals(age, predicted, n_resamples=500, seed=7)
    other = metrics.bootstrap_intervals(age, predicted, n_resamples=500, seed=8)
    point = metrics.regression_metrics(age, predicted)
    assert first == again
    assert first != other
    assert first["mae"][0] < point["mae"] < first["mae"][1]
    assert first["pearson_r"][0] < point["pearson_r"] < first["pearson_r"][1]


def test_bootstrap_interval_narrows_with_lower_level(pair):
    age, predicted = pair
    wide = metrics.bootstrap_intervals(age, predicted, n_resamples=500, level=0.95)
    narrow = metrics.bootstrap_intervals(age, predicted, n_resamples=500, level=0.5)
    assert wide["mae"][0] < narrow["mae"][0] < narrow["mae"][1] < wide["mae"][1]


@pytest.mark.parametrize(("n_resamples", "level"), [(0, 0.95), (100, 1.0), (100, 0.0)])
def test_bootstrap_rejects_bad_settings(pair, n_resamples, level):
    with pytest.raises(ValueError):
        metrics.bootstrap_intervals(*pair, n_resamples=n_resamples, level=level)


def test_bias_correction_recovers_a_known_line_and_removes_gap_trend():
    age = np.linspace(20, 80, 50)
    predicted = age + (-0.3 * age + 15)
    slope, intercept = metrics.fit_bias_correction(age, predicted)
    assert (slope, intercept) == (pytest.approx(-0.3), pytest.approx(15))
    corrected = metrics.apply_bias_correction(age, predicted, slope, intercept)
    np.testing.assert_allclose(corrected, age, atol=1e-9)


def test_bias_correction_never_uses_eval_rows():
    predictions = make_predictions(3)
    perturbed = predictions.copy()
    is_eval = perturbed["set"] == "eval"
    perturbed.loc[is_eval, "age"] = perturbed.loc[is_eval, "age"][::-1].to_numpy() + 7
    perturbed.loc[is_eval, "predicted"] = perturbed.loc[is_eval, "predicted"] * 1.3
    before = metrics.run_metrics(predictions, n_resamples=50)
    after = metrics.run_metrics(perturbed, n_resamples=50)
    assert after["bias_slope"] == before["bias_slope"]
    assert after["bias_intercept"] == before["bias_intercept"]
    assert after["mae"] != before["mae"]


def test_run_metrics_reports_eval_metrics_and_corrected_beside_uncorrected():
    predictions = make_predictions(4)
    result = metrics.run_metrics(predictions, n_resamples=200, seed=1)
    evaluation = predictions[predictions["set"] == "eval"]
    fit_rows = predictions[predictions["set"] != "eval"]
    line = stats.linregress(fit_rows["age"], fit_rows["predicted"] - fit_rows["age"])
    corrected = evaluation["predicted"] - (line.slope * evaluation["age"] + line.intercept)
    assert result["n_eval"] == len(evaluation)
    assert result["mae"] == pytest.approx(mean_absolute_error(evaluation["age"], evaluation["predicted"]))
    assert result["mae_corrected"] == pytest.approx(mean_absolute_error(evaluation["age"], corrected))
    assert result["mae_lo"] < result["mae"] < result["mae_hi"]
    # The simulated model regresses to the mean; correction must remove most of that trend.
    assert result["gap_age_spearman"] < -0.3
    assert abs(result["gap_age_spearman_corrected"]) < abs(result["gap_age_spearman"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda df: df.drop(columns="predicted"), "lack columns"),
        (lambda df: df.assign(set=df["set"].replace("tune", "validation")), "unknown set"),
        (lambda df: pd.concat([df, df.iloc[[0]]]), "more than once"),
        (lambda df: df.assign(predicted=df["predicted"].where(df.index != 5)), "finite"),
        (lambda df: df[df["set"] != "eval"], "no rows in set eval"),
    ],
)
def test_run_metrics_rejects_bad_predictions(change, message):
    with pytest.raises(ValueError, match=message):
        metrics.run_metrics(change(make_predictions(0)), n_resamples=10)


def test_best_epoch_is_first_minimum_of_tune_mae():
    history = pd.DataFrame({"epoch": [1, 2, 3, 4], "tune_mae": [9.0, 6.0, 7.0, 6.0]})
    assert metrics.best_epoch(history) == 2


def test_metrics_table_has_stable_columns_and_one_row_per_run(tmp_path):
    runs = make_runs()
    history = pd.DataFrame({"epoch": [1, 2, 3], "tune_mae": [8.0, 5.0, 6.0]})
    table = metrics.metrics_table(runs, n_resamples=50, seed=0, histories={("T1", "sfcn"): history})
    assert list(table.columns) == list(metrics.TABLE_COLUMNS)
    assert list(zip(table["modality"], table["model"], strict=True)) == list(runs)
    best = table.set_index(["modality", "model"])["best_epoch"]
    assert best[("T1", "sfcn")] == 2
    assert best.isna().sum() == len(runs) - 1
    row = table.iloc[0]
    assert row["mae"] == pytest.approx(metrics.run_metrics(runs[("T1", "cnn3d")], n_resamples=50)["mae"])
    io.write_table(table, tmp_path / "metrics.csv")
    assert list(io.read_table(tmp_path / "metrics.csv").columns) == list(metrics.TABLE_COLUMNS)


def test_metrics_table_gives_the_spread_over_replicates():
    runs = make_runs(models=("cnn3d",))
    replicates = metrics.replicate_maes(
        {
            (modality, model, replicate): make_predictions(10 * replicate + i)
            for i, (modality, model) in enumerate(runs)
            for replicate in (0, 1, 2)
        }
    )
    assert list(replicates.columns) == list(metrics.REPLICATE_COLUMNS) and len(replicates) == 3 * len(runs)
    table = metrics.metrics_table(runs, n_resamples=50, replicates=replicates).set_index(["modality", "model"])
    own = replicates[(replicates["modality"] == "T1") & (replicates["model"] == "cnn3d")]["mae"]
    row = table.loc[("T1", "cnn3d")]
    assert row["n_replicates"] == 3
    assert row["mae_replicate_mean"] == pytest.approx(own.mean())
    assert row["mae_replicate_sd"] == pytest.approx(own.std(ddof=1))
    single = metrics.metrics_table(runs, n_resamples=50).set_index(["modality", "model"]).loc[("T1", "cnn3d")]
    assert single["n_replicates"] == 1 and single["mae_replicate_mean"] == single["mae"]
    assert pd.isna(single["mae_replicate_sd"])


def eval_errors(predictions: pd.DataFrame) -> pd.Series:
    evaluation = predictions[predictions["set"] == "eval"]
    return (evaluation["predicted"] - evaluation["age"]).abs()


def test_paired_comparisons_match_scipy_wilcoxon():
    runs = make_runs(modalities=("T1", "TOF", "TOF_bin"), models=("sfcn",))
    table = metrics.paired_comparisons(runs)
    assert list(table.columns) == list(metrics.COMPARISON_COLUMNS)
    pairs = list(zip(table["modality_a"], table["modality_b"], strict=True))
    assert pairs == [("T1", "TOF"), ("T1", "TOF_bin"), ("TOF", "TOF_bin")]
    first = table.iloc[0]
    errors = {m: eval_errors(runs[(m, "sfcn")]) for m in ("T1", "TOF")}
    expected = stats.wilcoxon(errors["T1"].to_numpy(), errors["TOF"].to_numpy())
    assert first["n"] == 30
    assert first["statistic"] == pytest.approx(expected.statistic)
    assert first["p_value"] == pytest.approx(expected.pvalue)
    assert first["mae_a"] == pytest.approx(errors["T1"].mean())


def test_paired_comparisons_join_by_subject_not_row_order():
    runs = make_runs(modalities=("T1", "TOF"), models=("cnn3d",))
    shuffled = dict(runs)
    shuffled[("TOF", "cnn3d")] = runs[("TOF", "cnn3d")].sample(frac=1.0, random_state=0)
    pd.testing.assert_frame_equal(metrics.paired_comparisons(runs), metrics.paired_comparisons(shuffled))


def test_paired_comparisons_reject_different_eval_subjects():
    runs = make_runs(modalities=("T1", "TOF"), models=("cnn3d",))
    other = runs[("TOF", "cnn3d")].copy()
    other.loc[other.index[-1], "subject"] = "IXI999"
    runs[("TOF", "cnn3d")] = other
    with pytest.raises(ValueError, match=r"eval subjects differ.*IXI999"):
        metrics.paired_comparisons(runs)


def test_paired_comparisons_identical_errors_give_p_one_and_pairs_stay_within_model():
    predictions = make_predictions(0)
    runs = {("T1", "cnn3d"): predictions, ("TOF", "cnn3d"): predictions.copy(), ("T1", "sfcn"): predictions}
    table = metrics.paired_comparisons(runs)
    assert len(table) == 1
    assert (table.loc[0, "statistic"], table.loc[0, "p_value"]) == (0.0, 1.0)


def test_paired_comparisons_full_grid_and_holm_adjustment():
    table = metrics.paired_comparisons(make_runs())
    assert len(table) == len(MODELS) * 6
    assert (table["p_holm"] >= table["p_value"]).all()
    assert (table["p_holm"] <= 1).all()


def test_paired_comparisons_bound_the_mae_difference_and_give_the_detectable_difference():
    runs = make_runs(modalities=("T1", "TOF"), models=("cnn3d",))
    row = metrics.paired_comparisons(runs).iloc[0]
    differences = (eval_errors(runs[("T1", "cnn3d")]) - eval_errors(runs[("TOF", "cnn3d")])).to_numpy()
    sem = differences.std(ddof=1) / np.sqrt(len(differences))
    expected = stats.t.interval(0.95, len(differences) - 1, loc=differences.mean(), scale=sem)
    assert (row["difference_lo"], row["difference_hi"]) == pytest.approx(expected)
    assert row["detectable_difference"] == pytest.approx(metrics.detectable_difference(differences))


def test_detectable_difference_is_the_paired_power_formula_and_halves_with_four_times_the_subjects():
    differences = np.random.default_rng(0).normal(0.5, 3.0, 40)
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    expected = z * differences.std(ddof=1) / np.sqrt(40)
    assert metrics.detectable_difference(differences) == pytest.approx(expected)
    assert metrics.detectable_difference(np.tile(differences, 4)) == pytest.approx(expected / 2, rel=0.02)


def make_folds(k: int = 3, n: int = 30, seed: int = 0) -> dict[int, pd.DataFrame]:
    """One run's fold predictions: each subject held out in one fold, trained on in the others."""
    rng = np.random.default_rng(seed)
    subjects = [f"IXI{i:03d}" for i in range(n)]
    age = rng.uniform(20, 86, n)
    held_out = np.arange(n) % k
    folds = {}
    for fold in range(k):
        sets = np.where(held_out == fold, "eval", np.where(np.arange(n) % 5 == 0, "tune", "train"))
        predicted = 0.7 * age + 15 + rng.normal(0, 4, n)
        folds[fold + 1] = pd.DataFrame({"subject": subjects, "set": sets, "age": age, "predicted": predicted})
    return folds


def test_out_of_fold_takes_each_subject_from_its_held_out_fold_once():
    folds = make_folds()
    table = metrics.out_of_fold(folds)
    assert list(table.columns) == list(metrics.OUT_OF_FOLD_COLUMNS)
    assert sorted(table["subject"]) == sorted(folds[1]["subject"])
    assert (table["set"] == "eval").all()
    for fold, predictions in folds.items():
        held_out = predictions[predictions["set"] == "eval"].set_index("subject")
        mine = table[table["fold"] == fold].set_index("subject")
        assert sorted(mine.index) == sorted(held_out.index)
        np.testing.assert_allclose(mine["predicted"], held_out.loc[mine.index, "predicted"])
    np.testing.assert_allclose(table["gap"], table["predicted"] - table["age"])
    doubled = {**folds, 4: folds[1]}
    with pytest.raises(ValueError, match="held out in more than one fold"):
        metrics.out_of_fold(doubled)


def test_out_of_fold_bias_correction_is_fitted_in_each_training_fold_only():
    folds = make_folds()
    table = metrics.out_of_fold(folds)
    for fold, predictions in folds.items():
        fit_rows = predictions[predictions["set"] != "eval"]
        expected = metrics.fit_bias_correction(fit_rows["age"], fit_rows["predicted"])
        mine = table[table["fold"] == fold]
        assert (mine["bias_slope"].iloc[0], mine["bias_intercept"].iloc[0]) == pytest.approx(expected)
    # Held-out ages and predictions changed: no fold's correction moves.
    changed = {}
    for fold, predictions in folds.items():
        changed[fold] = predictions.copy()
        held_out = changed[fold]["set"] == "eval"
        changed[fold].loc[held_out, "age"] += 30.0
        changed[fold].loc[held_out, "predicted"] -= 10.0
    again = metrics.out_of_fold(changed)
    pd.testing.assert_frame_equal(table[["bias_slope", "bias_intercept"]], again[["bias_slope", "bias_intercept"]])


def test_crossval_table_gives_out_of_fold_mae_and_the_spread_over_folds():
    runs = {
        ("T1", "cnn3d"): metrics.out_of_fold(make_folds(seed=0)),
        ("TOF", "cnn3d"): metrics.out_of_fold(make_folds(seed=1)),
    }
    table = metrics.crossval_table(runs, n_resamples=1000, seed=0)
    assert list(table.columns) == list(metrics.CROSSVAL_COLUMNS)
    row = table.iloc[0]
    oof = runs[("T1", "cnn3d")]
    errors = (oof["predicted"] - oof["age"]).abs()
    assert (row["n"], row["folds"]) == (30, 3)
    assert row["mae"] == pytest.approx(errors.mean())
    assert row["mae_lo"] < row["mae"] < row["mae_hi"]
    assert row["fold_mae_sd"] == pytest.approx(errors.groupby(oof["fold"]).mean().std(ddof=1))


def test_design_comparison_sets_the_split_and_crossval_detectable_differences_side_by_side():
    split = metrics.paired_comparisons(make_runs(modalities=("T1", "TOF"), models=("cnn3d",)))
    runs = {
        ("T1", "cnn3d"): metrics.out_of_fold(make_folds(seed=0)),
        ("TOF", "cnn3d"): metrics.out_of_fold(make_folds(seed=1)),
    }
    crossval = metrics.paired_comparisons(runs)
    table = metrics.design_comparison(split, crossval)
    assert list(table.columns) == list(metrics.DESIGN_COLUMNS)
    row = table.iloc[0]
    assert (row["n_split"], row["n_crossval"]) == (30, 30)
    assert row["detectable_split"] == pytest.approx(split.loc[0, "detectable_difference"])
    assert row["ratio"] == pytest.approx(row["detectable_split"] / row["detectable_crossval"])


def test_holm_matches_hand_computation():
    np.testing.assert_allclose(metrics.holm([0.01, 0.04, 0.03, 0.5]), [0.04, 0.09, 0.09, 0.5])


def test_reference_lines_predict_mean_and_oracle():
    predictions = make_predictions(5)
    evaluation = predictions[predictions["set"] == "eval"]
    train_mean = predictions.loc[predictions["set"] == "train", "age"].mean()
    truth = predictions[["subject", "age"]].assign(bio_age=predictions["age"] + 3.0)
    truth = truth.sample(frac=1.0, random_state=1)  # joined by subject, not by position
    lines = metrics.reference_lines(predictions, truth)
    assert lines[metrics.PREDICT_MEAN_MAE] == pytest.approx(np.mean(np.abs(evaluation["age"] - train_mean)))
    assert lines[metrics.ORACLE_MAE] == pytest.approx(3.0)
    assert metrics.ORACLE_MAE not in metrics.reference_lines(predictions, None)


def test_reference_lines_require_ground_truth_for_every_eval_subject():
    predictions = make_predictions(5)
    truth = predictions[["subject"]].assign(bio_age=50.0).iloc[:-1]
    with pytest.raises(ValueError, match="lacks eval subjects"):
        metrics.reference_lines(predictions, truth)


def write_benchmark(path: Path, rows: list[str]) -> Path:
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_benchmark_table_parses_rule_job_and_missing_values(tmp_path):
    root = tmp_path / "results" / "benchmarks"
    paths = [
        write_benchmark(root / "register" / "IXI002.tsv", ["12.5\t0:00:12\t512.3\t900\t4\t4\t1\t2\t95\t11"]),
        write_benchmark(root / "register" / "IXI012.tsv", ["7.5\t0:00:07\tNA\t-\t-\t-\t-\t-\t-\t-"]),
        write_benchmark(root / "train" / "T1" / "sfcn.tsv", ["100\t0:01:40\t2048\t4096\t1\t1\t1\t1\t99\t90"]),
    ]
    table = metrics.benchmark_table(paths)
    assert list(table.columns) == list(metrics.BENCHMARK_COLUMNS)
    assert list(table["rule"]) == ["register", "register", "train"]
    assert list(table["job"]) == ["IXI002", "IXI012", "T1/sfcn"]
    assert table["s"].tolist() == [12.5, 7.5, 100.0]
    assert table.loc[0, "max_rss_mb"] == 512.3
    assert np.isnan(table.loc[1, "max_rss_mb"]) and np.isnan(table.loc[1, "cpu_time"])


def test_benchmark_table_averages_repeats_and_rejects_paths_outside_benchmarks(tmp_path):
    repeated = write_benchmark(
        tmp_path / "benchmarks" / "fit" / "a.tsv",
        ["10\t0:00:10\t100\t1\t1\t1\t1\t1\t1\t9", "20\t0:00:20\t300\t1\t1\t1\t1\t1\t1\t19"],
    )
    table = metrics.benchmark_table([repeated])
    assert (table.loc[0, "s"], table.loc[0, "max_rss_mb"], table.loc[0, "cpu_time"]) == (15.0, 200.0, 14.0)
    stray = write_benchmark(tmp_path / "logs" / "a.tsv", ["1\t0:00:01\t1\t1\t1\t1\t1\t1\t1\t1"])
    with pytest.raises(ValueError, match="benchmarks/<rule>"):
        metrics.benchmark_table([stray])
    assert list(metrics.benchmark_table([]).columns) == list(metrics.BENCHMARK_COLUMNS)


def test_summarize_benchmarks_per_rule():
    table = pd.DataFrame(
        {
            "rule": ["register", "register", "train"],
            "job": ["a", "b", "c"],
            "s": [10.0, 30.0, 5.0],
            "max_rss_mb": [100.0, np.nan, 900.0],
            "cpu_time": [1.0, 2.0, 3.0],
        }
    )
    summary = metrics.summarize_benchmarks(table)
    assert list(summary.columns) == list(metrics.BENCHMARK_SUMMARY_COLUMNS)
    register = summary.iloc[0]
    assert register["rule"] == "register"
    assert register[["jobs", "total_s", "mean_s", "max_s"]].tolist() == [2, 40.0, 20.0, 30.0]
    assert register["max_rss_mb"] == 100.0
    assert summary.iloc[1]["max_rss_mb"] == 900.0
