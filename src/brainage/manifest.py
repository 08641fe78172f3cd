"""The training manifest: one row per usable subject, with its tensors, demographics and QC.

It is the single table the split and the model read, so it is built strictly: every included
subject must have a QC record and, unless QC flags it, every tensor channel. A subject QC flags
is dropped with a reason naming the metric, its value and the bound, so the report can say
exactly who left the cohort at this stage and why.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

DEMOGRAPHIC_COLUMNS = ["subject", "site", "sex", "age"]


class ManifestError(ValueError):
    """Inputs to the manifest disagree (a subject without QC or tensors, an unknown QC metric)."""


def build_manifest(
    inventory: pd.DataFrame,
    qc: pd.DataFrame,
    tensors: Mapping[str, Mapping[str, str]],
    qc_bounds: Mapping[str, float],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Join included subjects with their QC numbers and tensor paths; drop QC failures.

    ``inventory``: :func:`brainage.inventory.build_inventory`'s subjects (only rows with
    ``included`` true are used when that column is present). ``qc``: one row per subject, column
    subject plus numeric QC columns. ``tensors[subject][channel]``: path of that subject's array.
    ``qc_bounds[metric]``: the metric's minimum allowed value; a missing value fails too.

    The inventory defines the cohort: QC rows and tensors of other subjects are ignored.

    Returns (manifest, exclusions). ``manifest``: subject, site, sex, age, ``tensor_<channel>``
    (channels sorted by name), then the QC columns in ``qc`` order; sorted by subject.
    ``exclusions``: subject, reason, for the QC-flagged subjects.
    """
    cohort = _included(inventory)
    qc_table = _qc_for(cohort["subject"], qc, qc_bounds)
    reasons = {subject: _qc_failures(row, qc_bounds) for subject, row in qc_table.iterrows()}
    passing = [s for s in cohort["subject"] if not reasons[s]]
    channels = sorted({channel for s in passing for channel in tensors.get(s, {})})
    paths = _tensor_paths(passing, tensors, channels)

    manifest = (
        cohort.loc[cohort["subject"].isin(passing), DEMOGRAPHIC_COLUMNS]
        .merge(paths, on="subject", how="left")
        .merge(qc_table.reset_index(), on="subject", how="left")
        .sort_values("subject")
        .reset_index(drop=True)
    )
    flagged = sorted((s, "; ".join(r)) for s, r in reasons.items() if r)
    exclusions = pd.DataFrame(flagged, columns=["subject", "reason"])
    return manifest, exclusions


def _included(inventory: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in DEMOGRAPHIC_COLUMNS if c not in inventory]
    if missing:
        raise ManifestError(f"inventory lacks column(s) {missing}; has {list(inventory.columns)}")
    cohort = inventory[inventory["included"].astype(bool)] if "included" in inventory else inventory
    repeated = sorted(cohort.loc[cohort["subject"].duplicated(), "subject"].unique())
    if repeated:
        raise ManifestError(f"inventory lists subject(s) more than once: {', '.join(repeated)}")
    return cohort.reset_index(drop=True)


def _qc_for(subjects: pd.Series, qc: pd.DataFrame, qc_bounds: Mapping[str, float]) -> pd.DataFrame:
    """The cohort's QC rows, indexed by subject; every subject needs one and every bound a column."""
    if "subject" not in qc:
        raise ManifestError(f"QC table lacks column 'subject'; has {list(qc.columns)}")
    unknown = [metric for metric in qc_bounds if metric not in qc]
    if unknown:
        raise ManifestError(f"QC bound(s) for metric(s) not in the QC table: {unknown}; QC columns: {list(qc.columns)}")
    clashing = [c for c in qc.columns if c in DEMOGRAPHIC_COLUMNS[1:] or c.startswith("tensor_")]
    if clashing:
        raise ManifestError(f"QC column(s) {clashing} clash with manifest columns; rename them")
    repeated = sorted(qc.loc[qc["subject"].duplicated(), "subject"].unique())
    if repeated:
        raise ManifestError(f"QC table has more than one row for subject(s): {', '.join(repeated)}")
    table = qc.set_index("subject")
    absent = [s for s in subjects if s not in table.index]
    if absent:
        raise ManifestError(f"no QC record for included subject(s): {', '.join(absent)}")
    return table.loc[list(subjects)]


def _qc_failures(row: pd.Series, qc_bounds: Mapping[str, float]) -> list[str]:
    """Each bound the subject's QC row breaks, worded with the metric, value and bound."""
    failures = []
    for metric, bound in qc_bounds.items():
        value = pd.to_numeric(row[metric], errors="coerce")
        if pd.isna(value):
            failures.append(f"QC {metric} is missing (minimum {bound:g})")
        elif value < bound:
            failures.append(f"QC {metric} = {value:.4g} is below the minimum {bound:g}")
    return failures


def _tensor_paths(subjects: list[str], tensors: Mapping[str, Mapping[str, str]], channels: list[str]) -> pd.DataFrame:
    """One ``tensor_<channel>`` column per channel; a passing subject lacking one is an error."""
    rows = []
    for subject in subjects:
        have = tensors.get(subject, {})
        lacking = [c for c in channels if not have.get(c)]
        if lacking:
            raise ManifestError(f"subject {subject}: no tensor for channel(s) {', '.join(lacking)}")
        rows.append({"subject": subject, **{f"tensor_{c}": str(have[c]) for c in channels}})
    return pd.DataFrame(rows, columns=["subject", *(f"tensor_{c}" for c in channels)])
