"""The train / tune / evaluation split, with an evaluation set whose ages are close to uniform.

A brain-age model's error depends on age, so the evaluation set should cover the age range
evenly rather than mirror the cohort's own age distribution. The original study drew many
``train_test_split`` seeds and kept the most uniform one; :func:`seed_search` reproduces that so
the report can show it, and :func:`stratified_eval` builds a set that is uniform by design.
Everything here is keyed by subject id, never by row position: the original work once filled
the sets from DataFrame positions instead of the returned ids, which silently mixes subjects
up whenever the index is not 0..n-1.

:func:`crossval_folds` adds a second design beside the split: k folds over every subject,
stratified by age, each with its own inner tune set, so that every subject gets an out-of-fold
prediction.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.model_selection import train_test_split

from brainage.vocabulary import EVAL, TRAIN, TUNE

# Below this many training subjects a brain-age model is not worth fitting; asking for an
# evaluation set that leaves fewer is a configuration mistake worth stopping on.
MIN_TRAIN_SIZE = 10

METHODS = ("stratified", "seed_search")
SEED_TABLE_COLUMNS = ["method", "seed", "ks_d", "ks_p", "chi2", "chi2_p", "best_seed", "chosen"]

# Candidates within this fraction of the spacing between target ages count as equally good,
# so balancing and the seed can choose among them; a quarter spacing moves the empirical CDF
# by at most 1 / (4 * eval_size), a small fraction of the best seed-search KS distance.
_TARGET_TOLERANCE = 0.25


class SplitError(ValueError):
    """The cohort cannot give the requested split; the message says what is short and by how much."""


def uniformity(ages: Sequence[float] | np.ndarray | pd.Series, lo: float, hi: float, n_bins: int) -> dict[str, float]:
    """How far ``ages`` are from Uniform(lo, hi): KS D and p, and chi-square over equal-width bins.

    KS is sensitive to where the ages sit; chi-square over ``n_bins`` bins checks the bin counts
    the stratified method equalizes. Keys: ks_d, ks_p, chi2, chi2_p.
    """
    values = np.asarray(ages, dtype=float)
    if not hi > lo:
        raise SplitError(f"age range [{lo}, {hi}] is empty; uniformity needs hi > lo")
    ks = stats.kstest(values, "uniform", args=(lo, hi - lo))
    counts, _ = np.histogram(values, bins=n_bins, range=(lo, hi))
    chi = stats.chisquare(counts)
    return {
        "ks_d": float(ks.statistic),
        "ks_p": float(ks.pvalue),
        "chi2": float(chi.statistic),
        "chi2_p": float(chi.pvalue),
    }


def seed_search(
    subjects: pd.Series | Sequence[str],
    ages: pd.Series | Sequence[float],
    eval_size: int,
    seeds: Sequence[int],
    n_bins: int,
) -> pd.DataFrame:
    """Score the evaluation set ``train_test_split`` gives for each seed; one row per seed.

    Ages are scored against Uniform(cohort min, cohort max). Subjects are sorted first, so a
    seed's split depends only on which subjects are in the cohort, not on their row order.
    Columns: seed, ks_d, ks_p, chi2, chi2_p. See :func:`best_seed` for the pick.
    """
    by_id = _ages_by_subject(subjects, ages)
    lo, hi = float(by_id.min()), float(by_id.max())
    rows = [
        {"seed": int(seed), **uniformity(by_id.loc[_seed_eval_ids(by_id, eval_size, seed)], lo, hi, n_bins)}
        for seed in seeds
    ]
    return pd.DataFrame(rows, columns=["seed", "ks_d", "ks_p", "chi2", "chi2_p"])


def best_seed(table: pd.DataFrame) -> int:
    """The seed in a :func:`seed_search` table with the lowest KS D; ties go to the lowest seed."""
    if table.empty:
        raise SplitError("seed search has no seeds to choose from")
    return int(table.sort_values(["ks_d", "seed"]).iloc[0]["seed"])


def seed_eval(
    subjects: pd.Series | Sequence[str], ages: pd.Series | Sequence[float], eval_size: int, seed: int
) -> list[str]:
    """The evaluation ids ``train_test_split`` gives for ``seed``, as scored by :func:`seed_search`."""
    return sorted(_seed_eval_ids(_ages_by_subject(subjects, ages), eval_size, seed))


def stratified_eval(
    subjects: pd.Series | Sequence[str],
    ages: pd.Series | Sequence[float],
    eval_size: int,
    n_bins: int,
    seed: int,
    balance: Sequence[pd.Series] | None = None,
    min_train: int = MIN_TRAIN_SIZE,
) -> list[str]:
    """Choose ``eval_size`` subjects whose ages are close to Uniform(min age, max age).

    The age range is cut into ``n_bins`` equal-width bins and each bin gives the same number
    of subjects; when ``eval_size`` is not a multiple of ``n_bins`` the extra ones go to bins
    drawn with ``seed``. Inside a bin, its quota of target ages is spaced evenly (these are
    the quantiles of the uniform distribution), and each target takes the unused subject
    nearest to it. Subjects within a quarter of the target spacing count as equally near:
    among those, the one whose ``balance`` categories (e.g. sex, site; Series aligned with
    ``subjects``) are most under-represented so far wins, then a ``seed``-drawn order.

    Raises :class:`SplitError` when fewer than ``eval_size + min_train`` subjects are given or
    a bin has fewer subjects than its quota. Returns the chosen ids, sorted.
    """
    by_id = _ages_by_subject(subjects, ages)
    if eval_size < 1 or n_bins < 1:
        raise SplitError(f"eval_size ({eval_size}) and n_bins ({n_bins}) must be at least 1")
    if len(by_id) < eval_size + min_train:
        raise SplitError(
            f"{len(by_id)} subjects are too few for an evaluation set of {eval_size} plus a training set "
            f"of at least {min_train}: {eval_size + min_train} needed"
        )
    ids, values = by_id.index.to_numpy(), by_id.to_numpy()
    lo, hi = float(values.min()), float(values.max())
    if not hi > lo:
        raise SplitError(f"all {len(values)} subjects have the same age ({lo}); no age range to spread over")
    rng = np.random.default_rng(seed)
    edges = np.linspace(lo, hi, n_bins + 1)
    # The last bin includes the oldest subject, whose age equals the top edge.
    bins = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, n_bins - 1)
    quotas = _bin_quotas(eval_size, n_bins, rng)
    _check_bins(bins, quotas, edges)
    priority = rng.permutation(len(ids))
    balancer = _Balancer(_balance_codes(balance, subjects, by_id))
    tolerance = _TARGET_TOLERANCE * (hi - lo) / eval_size
    chosen: list[int] = []
    for b in range(n_bins):
        pool = list(np.flatnonzero(bins == b))
        width = edges[b + 1] - edges[b]
        for j in range(quotas[b]):
            target = edges[b] + width * (j + 0.5) / quotas[b]
            pick = _pick(pool, values, target, tolerance, priority, balancer)
            pool.remove(pick)
            balancer.add(pick)
            chosen.append(pick)
    return sorted(str(ids[i]) for i in chosen)


def make_split(
    manifest: pd.DataFrame,
    method: str,
    eval_size: int,
    tune_size: int,
    n_bins: int,
    seed: int,
    seeds: Sequence[int],
    balance_by: Sequence[str] = (),
    min_train: int = MIN_TRAIN_SIZE,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split the manifest's subjects into train, tune and eval; return (split, seed_table).

    The evaluation set comes from ``method``: "stratified" (:func:`stratified_eval`, balancing
    by the ``balance_by`` columns) or "seed_search" (the best of ``seeds``, :func:`best_seed`).
    The tune set is ``tune_size`` subjects drawn with ``seed`` from the rest, for model
    selection, so the evaluation set is never used to choose anything; the rest is train.

    ``split``: subject, set ("train" | "tune" | "eval"), age; sorted by subject.
    ``seed_table``: both methods are always scored so the report can compare them. One row per
    seed with method "seed_search", plus one row with method "stratified" whose seed is the
    ``seed`` it drew with; columns ``SEED_TABLE_COLUMNS``, where best_seed marks the lowest-D
    seed and chosen marks the row whose evaluation set the split uses.
    """
    if method not in METHODS:
        raise SplitError(f"unknown split method {method!r}; use one of {list(METHODS)}")
    cohort = _check_manifest(manifest, balance_by)
    subjects, ages = cohort["subject"], cohort["age"]
    if tune_size < 0:
        raise SplitError(f"tune_size must not be negative (got {tune_size})")
    needed = eval_size + tune_size + min_train
    if len(cohort) < needed:
        raise SplitError(
            f"{len(cohort)} subjects are too few for eval {eval_size} + tune {tune_size} + "
            f"training at least {min_train}: {needed} needed"
        )
    lo, hi = float(ages.min()), float(ages.max())
    searched = seed_search(subjects, ages, eval_size, seeds, n_bins)
    stratified = stratified_eval(
        subjects, ages, eval_size, n_bins, seed, [cohort[c] for c in balance_by], min_train + tune_size
    )
    by_id = cohort.set_index("subject")["age"]
    stratified_row = {"method": "stratified", "seed": seed, **uniformity(by_id.loc[stratified], lo, hi, n_bins)}
    table = pd.concat([searched.assign(method="seed_search"), pd.DataFrame([stratified_row])], ignore_index=True)
    top = best_seed(searched) if len(searched) else None
    table["best_seed"] = (table["method"] == "seed_search") & (table["seed"] == top)
    if method == "stratified":
        eval_ids = stratified
        table["chosen"] = table["method"] == "stratified"
    else:
        if top is None:
            raise SplitError("split method 'seed_search' needs at least one seed")
        eval_ids = seed_eval(subjects, ages, eval_size, top)
        table["chosen"] = table["best_seed"]
    rest = sorted(set(by_id.index) - set(eval_ids))
    tune_ids = set(np.random.default_rng(seed).choice(rest, size=tune_size, replace=False).tolist())
    labels = dict.fromkeys(eval_ids, EVAL) | dict.fromkeys(tune_ids, TUNE)
    split = pd.DataFrame(
        {"subject": by_id.index, "set": [labels.get(s, TRAIN) for s in by_id.index], "age": by_id.to_numpy()}
    )
    return split, table[SEED_TABLE_COLUMNS]


FOLD_COLUMNS = ["fold", "subject", "set", "age"]


def crossval_folds(manifest: pd.DataFrame, folds: int, tune_size: int, seed: int) -> pd.DataFrame:
    """Every subject held out once in ``folds`` age-stratified folds, with an inner tune set per fold.

    Subjects sorted by age are dealt in consecutive groups of ``folds``, each group's members to
    distinct folds in a ``seed``-drawn order, so every fold's held-out ages cover the whole range
    and fold sizes differ by at most one. Within each fold's training subjects, ``tune_size`` of
    them form the inner tune set, one drawn with ``seed`` from each of ``tune_size`` consecutive
    age strata, so selection sees the whole age range too; the held-out fold chooses nothing.

    Returns one split per fold, stacked: columns :data:`FOLD_COLUMNS`, fold numbered 1..folds,
    set "train" | "tune" | "eval" (eval = the held-out fold), each subject in every fold once.
    """
    cohort = _check_manifest(manifest, [])
    by_id = _ages_by_subject(cohort["subject"], cohort["age"])
    if folds < 2:
        raise SplitError(f"cross-validation needs at least 2 folds (got {folds})")
    largest_fold = -(-len(by_id) // folds)
    needed_training = tune_size + MIN_TRAIN_SIZE
    if len(by_id) - largest_fold < needed_training:
        raise SplitError(
            f"{len(by_id)} subjects are too few for {folds} folds: a fold of {largest_fold} leaves "
            f"{len(by_id) - largest_fold} for tune {tune_size} + training at least {MIN_TRAIN_SIZE}"
        )
    rng = np.random.default_rng(seed)
    # Ties in age are broken by id, so the deal depends on the cohort, not on its row order.
    by_age = by_id.sort_values(kind="stable")
    held_out = pd.Series(0, index=by_age.index)
    for start in range(0, len(by_age), folds):
        group = by_age.index[start : start + folds]
        held_out.loc[group] = rng.permutation(folds)[: len(group)] + 1
    splits = []
    for fold in range(1, folds + 1):
        training = by_age[held_out != fold]
        strata = np.array_split(np.arange(len(training)), tune_size) if tune_size else []
        tune_ids = {training.index[int(rng.choice(stratum))] for stratum in strata}
        labels = [EVAL if held_out[s] == fold else TUNE if s in tune_ids else TRAIN for s in by_id.index]
        splits.append(pd.DataFrame({"fold": fold, "subject": by_id.index, "set": labels, "age": by_id.to_numpy()}))
    return pd.concat(splits, ignore_index=True)[FOLD_COLUMNS]


def _ages_by_subject(subjects: pd.Series | Sequence[str], ages: pd.Series | Sequence[float]) -> pd.Series:
    """Ages indexed by subject id, sorted by id; refuses input that could pair ids with wrong ages."""
    if isinstance(subjects, pd.Series) and isinstance(ages, pd.Series) and not subjects.index.equals(ages.index):
        raise SplitError("subjects and ages are indexed differently; pass columns of one table")
    ids = [str(s) for s in subjects]
    values = np.asarray(ages, dtype=float)
    if len(ids) != len(values):
        raise SplitError(f"{len(ids)} subjects but {len(values)} ages")
    repeated = sorted(s for s, n in Counter(ids).items() if n > 1)
    if repeated:
        raise SplitError(f"subjects listed more than once: {', '.join(repeated[:10])}")
    unknown = [s for s, a in zip(ids, values, strict=True) if not np.isfinite(a)]
    if unknown:
        raise SplitError(f"subjects without an age: {', '.join(unknown[:10])}")
    return pd.Series(values, index=pd.Index(ids, name="subject"), name="age").sort_index()


def _seed_eval_ids(by_id: pd.Series, eval_size: int, seed: int) -> list[str]:
    _, eval_ids = train_test_split(by_id.index.to_numpy(), test_size=eval_size, random_state=seed)
    return list(eval_ids)


def _bin_quotas(eval_size: int, n_bins: int, rng: np.random.Generator) -> np.ndarray:
    """Equal shares per bin; the remainder goes one each to bins drawn with ``rng``."""
    quotas = np.full(n_bins, eval_size // n_bins)
    quotas[rng.choice(n_bins, size=eval_size % n_bins, replace=False)] += 1
    return quotas


def _check_bins(bins: np.ndarray, quotas: np.ndarray, edges: np.ndarray) -> None:
    counts = np.bincount(bins, minlength=len(quotas))
    thin = [
        f"ages {edges[b]:.1f}-{edges[b + 1]:.1f} has {counts[b]} subject(s), {quotas[b]} needed"
        for b in range(len(quotas))
        if counts[b] < quotas[b]
    ]
    if thin:
        raise SplitError(
            "too few subjects in age bin(s) for a uniform evaluation set: "
            + "; ".join(thin)
            + " (use fewer bins or a smaller evaluation set)"
        )


def _balance_codes(
    balance: Sequence[pd.Series] | None, subjects: pd.Series | Sequence[str], by_id: pd.Series
) -> list[np.ndarray]:
    """Each balancing variable as category labels in ``by_id`` order (missing = its own label)."""
    ids = [str(s) for s in subjects]
    codes = []
    for variable in balance or []:
        if len(variable) != len(ids):
            raise SplitError(f"balancing variable {variable.name!r} has {len(variable)} values for {len(ids)} subjects")
        labels = pd.Series(np.asarray(variable, dtype=object), index=ids).fillna("missing").astype(str)
        codes.append(labels.loc[by_id.index].to_numpy())
    return codes


class _Balancer:
    """Tracks the chosen subjects' categories and scores how much a candidate would even them out."""

    def __init__(self, codes: list[np.ndarray]) -> None:
        self.codes = codes
        self.shares = [pd.Series(c).value_counts(normalize=True).to_dict() for c in codes]
        self.counts: list[dict[str, int]] = [{} for _ in codes]
        self.n = 0

    def deficit(self, i: int) -> float:
        """How far below its cohort share the candidate's categories are (higher = more needed)."""
        return sum(
            share[c[i]] * (self.n + 1) - count.get(c[i], 0)
            for c, share, count in zip(self.codes, self.shares, self.counts, strict=True)
        )

    def add(self, i: int) -> None:
        for c, count in zip(self.codes, self.counts, strict=True):
            count[c[i]] = count.get(c[i], 0) + 1
        self.n += 1


def _pick(
    pool: list[int], values: np.ndarray, target: float, tolerance: float, priority: np.ndarray, balancer: _Balancer
) -> int:
    """The nearest subject to ``target``; near-equals are decided by balance, then seeded order."""
    distance = np.abs(values[pool] - target)
    near = [i for i, d in zip(pool, distance, strict=True) if d <= tolerance]
    if not near:
        return min(pool, key=lambda i: (abs(values[i] - target), priority[i]))
    return max(near, key=lambda i: (balancer.deficit(i), -priority[i]))


def _check_manifest(manifest: pd.DataFrame, balance_by: Sequence[str]) -> pd.DataFrame:
    """The manifest's subject, age and balancing columns, validated, sorted by subject."""
    missing = [c for c in ["subject", "age", *balance_by] if c not in manifest]
    if missing:
        raise SplitError(f"manifest lacks column(s) {missing}; has {list(manifest.columns)}")
    cohort = manifest[["subject", "age", *balance_by]].copy()
    cohort["subject"] = cohort["subject"].astype(str)
    cohort["age"] = pd.to_numeric(cohort["age"], errors="coerce")
    return cohort.sort_values("subject").reset_index(drop=True)
