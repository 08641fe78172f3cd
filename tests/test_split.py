"""The age-uniform evaluation split: correctness by subject id, uniformity targets, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from brainage.demographics import read_demographics, resolve_subjects
from brainage.split import (
    FOLD_COLUMNS,
    SEED_TABLE_COLUMNS,
    SplitError,
    best_seed,
    crossval_folds,
    make_split,
    seed_eval,
    seed_search,
    stratified_eval,
    uniformity,
)

REAL_SHEET = Path("/work/shared/data/ixi/IXI.xls")
EVAL_SIZE = 50
N_BINS = 10


def ixi_like_ages(n: int = 560, seed: int = 7) -> np.ndarray:
    """Ages shaped like IXI's: 20 to 86, a young-adult bulge and a larger 55-75 bulk."""
    rng = np.random.default_rng(seed)
    young = rng.normal(30, 6, size=int(n * 0.35))
    older = rng.normal(60, 11, size=n - len(young))
    return np.clip(np.concatenate([young, older]), 20.0, 86.3)


def cohort(n: int = 560, seed: int = 7) -> pd.DataFrame:
    """A manifest with a shuffled, filtered index, so row position and label both differ from order."""
    rng = np.random.default_rng(seed)
    ages = ixi_like_ages(n + 40, seed)
    table = pd.DataFrame(
        {
            "subject": [f"IXI{i:03d}" for i in range(1, n + 41)],
            "age": ages,
            "sex": rng.choice(["F", "M"], size=n + 40, p=[0.55, 0.45]),
            "site": rng.choice(["Guys", "HH", "IOP"], size=n + 40, p=[0.55, 0.3, 0.15]),
        },
        index=rng.permutation(np.arange(1000, 1000 + n + 40)),
    )
    return table.sample(frac=1.0, random_state=seed).iloc[:n]


def test_uniformity_of_uniform_quantiles() -> None:
    ages = 20 + 60 * (np.arange(50) + 0.5) / 50
    scores = uniformity(ages, 20, 80, 10)
    assert scores["ks_d"] == pytest.approx(0.01)
    assert scores["chi2"] == 0 and scores["chi2_p"] == 1


@pytest.mark.parametrize("method", ["stratified", "seed_search"])
def test_split_is_by_subject_id(method: str) -> None:
    manifest = cohort(200)
    split, table = make_split(manifest, method, EVAL_SIZE, 20, N_BINS, seed=3, seeds=range(50))
    assert list(split.columns) == ["subject", "set", "age"]
    assert split["subject"].tolist() == sorted(manifest["subject"])
    assert split["subject"].is_unique  # so no id is in two sets
    counts = split["set"].value_counts()
    assert (counts["eval"], counts["tune"], counts["train"]) == (EVAL_SIZE, 20, 200 - EVAL_SIZE - 20)
    # Each id keeps its own age: the sets were filled by id, not by row position.
    ages = manifest.set_index("subject")["age"]
    assert np.array_equal(split["age"].to_numpy(), ages.loc[split["subject"]].to_numpy())
    eval_ids = split.loc[split["set"] == "eval", "subject"].tolist()
    if method == "stratified":
        assert eval_ids == stratified_eval(manifest["subject"], manifest["age"], EVAL_SIZE, N_BINS, 3, min_train=30)
    else:
        best = int(table.loc[table["best_seed"], "seed"].iloc[0])
        assert eval_ids == seed_eval(manifest["subject"], manifest["age"], EVAL_SIZE, best)
    chosen = table[table["chosen"]]
    assert len(chosen) == 1 and chosen["method"].iloc[0] == method


def test_split_is_reproducible_and_seeded() -> None:
    manifest = cohort(200)
    first, _ = make_split(manifest, "stratified", EVAL_SIZE, 20, N_BINS, seed=0, seeds=range(5))
    again, _ = make_split(manifest.sample(frac=1.0, random_state=1), "stratified", EVAL_SIZE, 20, N_BINS, 0, range(5))
    pd.testing.assert_frame_equal(first, again)
    splits = [make_split(manifest, "stratified", EVAL_SIZE, 20, N_BINS, seed, range(5))[0] for seed in range(5)]
    eval_sets = {tuple(split.loc[split["set"] == "eval", "subject"]) for split in splits}
    assert len(eval_sets) > 1


def test_tune_never_overlaps_eval() -> None:
    manifest = cohort(150)
    for seed in range(10):
        split, _ = make_split(manifest, "stratified", 30, 15, 6, seed, range(3))
        sets = split.groupby("set")["subject"].apply(set)
        assert not sets["tune"] & sets["eval"] and not sets["train"] & (sets["tune"] | sets["eval"])
        assert len(sets["tune"]) == 15


def test_seed_table_marks_best_and_chosen() -> None:
    _, table = make_split(cohort(200), "seed_search", EVAL_SIZE, 10, N_BINS, seed=0, seeds=range(30))
    assert list(table.columns) == SEED_TABLE_COLUMNS
    assert (table["method"] == "seed_search").sum() == 30 and (table["method"] == "stratified").sum() == 1
    searched = table[table["method"] == "seed_search"]
    best = searched.loc[searched["best_seed"]]
    assert len(best) == 1 and best["ks_d"].iloc[0] == searched["ks_d"].min()
    assert table["chosen"].equals(table["best_seed"])


def test_balance_tracks_cohort_shares() -> None:
    manifest = cohort(400)
    ids = stratified_eval(manifest["subject"], manifest["age"], EVAL_SIZE, N_BINS, 0, balance=[manifest["sex"]])
    share = manifest.set_index("subject").loc[ids, "sex"].eq("F").mean()
    assert abs(share - manifest["sex"].eq("F").mean()) <= 0.05


def check_uniformity_targets(subjects: pd.Series, ages: pd.Series, label: str) -> None:
    """Stratified KS D at most half the best of 1000 seeds, and KS p >= 0.9; prints the numbers."""
    table = seed_search(subjects, ages, EVAL_SIZE, range(1000), N_BINS)
    best = table.set_index("seed").loc[best_seed(table)]
    ids = stratified_eval(subjects, ages, EVAL_SIZE, N_BINS, seed=0)
    by_id = pd.Series(ages.to_numpy(), index=subjects.to_numpy())
    scores = uniformity(by_id.loc[ids], ages.min(), ages.max(), N_BINS)
    print(
        f"\n{label}: n={len(ages)}, eval n={len(ids)}; stratified D={scores['ks_d']:.4f} p={scores['ks_p']:.4f} "
        f"chi2 p={scores['chi2_p']:.3f}; best of 1000 seeds (seed {best_seed(table)}) "
        f"D={best['ks_d']:.4f} p={best['ks_p']:.4f} chi2 p={best['chi2_p']:.3f}"
    )
    assert len(ids) == EVAL_SIZE
    assert scores["ks_d"] <= best["ks_d"] / 2
    assert scores["ks_p"] >= 0.9


def test_uniformity_targets_synthetic() -> None:
    manifest = cohort(560)
    check_uniformity_targets(manifest["subject"], manifest["age"], "synthetic IXI-like ages")


@pytest.mark.skipif(not REAL_SHEET.exists(), reason="real IXI sheet not present")
def test_uniformity_targets_real_sheet() -> None:
    subjects, _ = resolve_subjects(read_demographics(REAL_SHEET))
    check_uniformity_targets(subjects["subject"], subjects["age"], "real sheet usable ages")


def test_too_few_subjects_message() -> None:
    manifest = cohort(55)
    expected = r"55 subjects are too few for an evaluation set of 50 plus a training set of at least 10: 60 needed"
    with pytest.raises(SplitError, match=expected):
        stratified_eval(manifest["subject"], manifest["age"], EVAL_SIZE, N_BINS, 0)
    expected = r"55 subjects are too few for eval 50 \+ tune 5 \+ training at least 10: 65 needed"
    with pytest.raises(SplitError, match=expected):
        make_split(manifest, "stratified", EVAL_SIZE, 5, N_BINS, 0, range(3))


def test_thin_bin_message() -> None:
    # 20-30: 40 subjects, 30-40: 2, 40-50: 40; a 30-subject set needs 10 per bin.
    ages = np.concatenate([np.linspace(20, 29.9, 40), [33.0, 36.0], np.linspace(40.1, 50, 40)])
    subjects = pd.Series([f"S{i:03d}" for i in range(len(ages))])
    with pytest.raises(SplitError, match=r"ages 30\.0-40\.0 has 2 subject\(s\), 10 needed"):
        stratified_eval(subjects, pd.Series(ages), 30, 3, 0)


def test_misaligned_inputs_are_refused() -> None:
    manifest = cohort(100)
    with pytest.raises(SplitError, match="indexed differently"):
        seed_search(manifest["subject"], manifest["age"].reset_index(drop=True), 20, range(2), 5)
    doubled = pd.concat([manifest, manifest.iloc[:1]])
    with pytest.raises(SplitError, match="more than once: IXI"):
        make_split(doubled, "stratified", 20, 5, 5, 0, range(2))


def test_crossval_folds_are_disjoint_cover_every_subject_and_keep_tune_apart() -> None:
    manifest = cohort(n=103)
    folds = crossval_folds(manifest, folds=5, tune_size=10, seed=3)
    assert list(folds.columns) == FOLD_COLUMNS
    held_out = folds[folds["set"] == "eval"]
    # Every subject is held out exactly once; the folds differ in size by at most one.
    assert sorted(held_out["subject"]) == sorted(manifest["subject"])
    assert held_out["fold"].value_counts().agg(["min", "max"]).tolist() == [20, 21]
    for fold, split in folds.groupby("fold"):
        assert sorted(split["subject"]) == sorted(manifest["subject"]), fold
        tune = set(split.loc[split["set"] == "tune", "subject"])
        assert len(tune) == 10 and not tune & set(split.loc[split["set"] == "eval", "subject"])
    ages = manifest.set_index("subject")["age"]
    assert (folds["age"].to_numpy() == ages.loc[folds["subject"]].to_numpy()).all()


def test_crossval_folds_and_their_tune_sets_cover_the_age_range() -> None:
    manifest = cohort(n=200)
    folds = crossval_folds(manifest, folds=5, tune_size=10, seed=0)
    ages = np.sort(manifest["age"].to_numpy())
    for fold, split in folds.groupby("fold"):
        for subset in ("eval", "tune"):
            subset_ages = split.loc[split["set"] == subset, "age"]
            # Each held-out fold and each inner tune set reaches into the youngest and the oldest tenth.
            assert subset_ages.min() <= ages[len(ages) // 10], (fold, subset)
            assert subset_ages.max() >= ages[-len(ages) // 10], (fold, subset)


def test_crossval_folds_are_by_subject_id_and_seeded() -> None:
    manifest = cohort(n=60)
    folds = crossval_folds(manifest, folds=3, tune_size=4, seed=1)
    shuffled = manifest.sample(frac=1.0, random_state=5).reset_index(drop=True)
    pd.testing.assert_frame_equal(folds, crossval_folds(shuffled, folds=3, tune_size=4, seed=1))
    assert not folds.equals(crossval_folds(manifest, folds=3, tune_size=4, seed=2))


@pytest.mark.parametrize(
    ("n", "folds", "message"),
    [(60, 1, "at least 2 folds"), (20, 3, "too few for 3 folds: a fold of 7 leaves 13 for tune 4")],
)
def test_crossval_folds_refuse_what_cannot_train(n: int, folds: int, message: str) -> None:
    with pytest.raises(SplitError, match=message):
        crossval_folds(cohort(n=n), folds=folds, tune_size=4, seed=0)
