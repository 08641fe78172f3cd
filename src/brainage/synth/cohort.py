"""The synthetic cohort: who is imaged, their ages and sites, and which quirks they carry.

The plan drives everything else: the per-subject images (:mod:`brainage.synth.subject`), the
demographics sheet (:mod:`brainage.synth.sheet`) and the hidden ground-truth table here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from brainage.demographics import subject_id
from brainage.io import write_table
from brainage.paths import ixi_image
from brainage.synth.seeding import random_stream
from brainage.vocabulary import MRA, RAW_SCANS, SITES

USABLE_STATUSES = ("ok", "zero_duplicate")

_SITE_WEIGHTS = (0.55, 0.32, 0.13)
# Series numbers run per site from these bases, like IXI's "Guys-0828", "HH-1211", "IOP-0873".
_SITE_SERIES_BASE = {"Guys": 800, "HH": 1200, "IOP": 850}

# IXI's age histogram by decade (20-30, ..., 80-90): flat to 70, thin at the old end.
_AGE_BIN_EDGES = (20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 86.0)
_AGE_BIN_WEIGHTS = (102, 99, 89, 102, 129, 58, 10)
DAYS_PER_YEAR = 365.25

# Fractions of the imaged cohort carrying each quirk of the real data.
_ZERO_DUPLICATE_FRACTION = 0.05
_CONFLICTING_AGE_FRACTION = 1 / 150  # the real sheet has 2 in ~600
_NO_AGE_FRACTION = 0.03
_NO_MRA_FRACTION = 0.04
_SHEET_ONLY_FRACTION = 0.03
_MIN_FOR_ALL_QUIRKS = 12


def plan_cohort(n_subjects: int, seed: int, bio_age_sigma: float = 3.0) -> pd.DataFrame:
    """Return the deterministic cohort: one row per imaged subject plus sheet-only rows.

    Columns: subject, ixi_id, site, series, sex, age, bio_age, has_mra, sheet_status, imaged.
    ``age`` is a whole number of days over 365.25, so the spreadsheet can hold it exactly as
    (STUDY_DATE - DOB) / 365.25. Quirk counts scale with ``n_subjects`` (each rounded, and at
    least one of each when ``n_subjects >= 12``) and never overlap, so a quirk's effect can be
    tested alone. The per-scan head motion is not a column:
    :func:`brainage.synth.subject.synthesize_subject` draws it from ``(seed, subject)``, and the
    truth JSON records it.
    """
    if n_subjects < 1:
        raise ValueError(f"n_subjects must be at least 1, got {n_subjects}")
    rng = random_stream(seed, "cohort")
    n_sheet_only = _quirk_count(_SHEET_ONLY_FRACTION, n_subjects)
    n_rows = n_subjects + n_sheet_only
    # IXI ids start at 2 and skip a few numbers now and then.
    steps = 1 + (rng.random(n_rows) < 0.1) * rng.integers(1, 4, n_rows)
    ixi_ids = 2 + np.concatenate([[0], np.cumsum(steps[1:])])
    imaged = np.ones(n_rows, dtype=bool)
    imaged[rng.choice(n_rows, n_sheet_only, replace=False)] = False

    sites = rng.choice(SITES, n_rows, p=_SITE_WEIGHTS)
    series = _series_numbers(sites, rng)
    sexes = np.where(rng.random(n_rows) < 0.55, 2, 1)
    ages = _sample_ages(n_rows, rng)
    bio_ages = ages + rng.normal(0.0, bio_age_sigma, n_rows)

    statuses = np.full(n_rows, "ok", dtype=object)
    has_mra = imaged.copy()
    candidates = list(rng.permutation(np.flatnonzero(imaged)))
    quirk_counts = {
        "zero_duplicate": _quirk_count(_ZERO_DUPLICATE_FRACTION, n_subjects),
        "conflicting_age": _quirk_count(_CONFLICTING_AGE_FRACTION, n_subjects, cap=2),
        "no_age": _quirk_count(_NO_AGE_FRACTION, n_subjects),
        "absent": _quirk_count(0.0, n_subjects, cap=1),  # exactly one from 12 subjects up
    }
    for status, count in quirk_counts.items():
        for _ in range(min(count, len(candidates))):
            statuses[candidates.pop()] = status
    for _ in range(min(_quirk_count(_NO_MRA_FRACTION, n_subjects), len(candidates))):
        has_mra[candidates.pop()] = False

    return pd.DataFrame(
        {
            "subject": [subject_id(ixi_id) for ixi_id in ixi_ids],
            "ixi_id": ixi_ids.astype(int),
            "site": sites.astype(str),
            "series": series,
            "sex": sexes.astype(int),
            "age": ages,
            "bio_age": bio_ages,
            "has_mra": has_mra,
            "sheet_status": statuses.astype(str),
            "imaged": imaged,
        }
    )


def usable_subjects(plan: pd.DataFrame) -> pd.DataFrame:
    """Rows a correct pipeline keeps: imaged, with an MRA, and one unambiguous age in the sheet."""
    return plan[plan["imaged"] & plan["has_mra"] & plan["sheet_status"].isin(USABLE_STATUSES)]


def _quirk_count(fraction: float, n_subjects: int, cap: int | None = None) -> int:
    """Scale a quirk with the cohort, but guarantee one of each from 12 subjects up."""
    count = round(fraction * n_subjects)
    if n_subjects >= _MIN_FOR_ALL_QUIRKS:
        count = max(1, count)
    return count if cap is None else min(count, cap)


def _sample_ages(n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ages from IXI's decade histogram, rounded to whole days for an exact spreadsheet."""
    weights = np.asarray(_AGE_BIN_WEIGHTS, dtype=float)
    bins = rng.choice(len(weights), n, p=weights / weights.sum())
    low = np.asarray(_AGE_BIN_EDGES[:-1])[bins]
    high = np.asarray(_AGE_BIN_EDGES[1:])[bins]
    years = rng.uniform(low, high)
    return np.round(years * DAYS_PER_YEAR) / DAYS_PER_YEAR


def _series_numbers(sites: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-site running series numbers that grow with the id, as the scanners' counters did."""
    counters = dict(_SITE_SERIES_BASE)
    series = np.empty(len(sites), dtype=int)
    for index, site in enumerate(sites):
        counters[site] += int(rng.integers(1, 4))
        series[index] = counters[site]
    return series


def subject_files(row: Mapping) -> dict[str, str]:
    """Relative paths of a subject's raw images under the raw root, in IXI's layout, keyed by scan."""
    scans = [scan for scan in RAW_SCANS if scan != MRA or bool(row["has_mra"])]
    return {scan: str(ixi_image(row["subject"], row["site"], row["series"], scan)) for scan in scans}


def write_ground_truth_table(plan: pd.DataFrame, path: Path) -> None:
    """Write the hidden truth (age, bio_age, MRA presence, sheet quirk) of the imaged subjects."""
    columns = ["subject", "age", "bio_age", "has_mra", "sheet_status"]
    write_table(plan.loc[plan["imaged"], columns].reset_index(drop=True), path)
