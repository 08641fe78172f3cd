"""What exists on disk, joined with the demographics: who is usable, and why the others are not.

Two raw sources give the same inventory: IXI's download (:func:`build_inventory`) and a BIDS
dataset (:func:`brainage.bids.build_bids_inventory`). Each finds its files (:data:`FILE_COLUMNS`)
and its demographics; :func:`join_inventory` then applies the same exclusion rules and image
checks to both.

IXI ships one tar per scan; they extract flat or into ``IXI-T1/``-style folders, so images
are found by file name (:data:`brainage.paths.IXI_IMAGE_NAME`) anywhere under the raw folder.
Every required image is fully decoded once here, so a truncated download excludes one subject
with a reason instead of crashing a preprocessing job hours later.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from brainage.demographics import AGE_RANGE, read_demographics, resolve_subjects
from brainage.io import ImageError, load_image
from brainage.paths import IXI_IMAGE_NAME
from brainage.vocabulary import RAW_SCANS

# What a raw source's file scan gives, one row per subject: paths are absolute, "" when absent.
FILE_COLUMNS = ["subject", "site", *(f"path_{scan}" for scan in RAW_SCANS)]
INVENTORY_COLUMNS = [
    "subject",
    "site",
    "sex",
    "age",
    *(f"path_{scan}" for scan in RAW_SCANS),
    "included",
    "reason",
]

NOT_IN_SHEET = "absent from the demographics sheet"
NO_IMAGES = "no images"


class InventoryError(ValueError):
    """The raw folder is ambiguous (one image found twice, one subject at two sites)."""


def scan_raw(raw_dir: Path) -> pd.DataFrame:
    """One row per subject found under ``raw_dir``, with :data:`FILE_COLUMNS`.

    Paths are absolute; a scan the subject lacks is an empty string. Files whose names do
    not follow the IXI pattern are ignored. The same image found twice, or one subject at two
    sites, is an error: which copy is right is not a guess to make silently.
    """
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise InventoryError(f"{raw_dir}: raw image folder does not exist")
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(raw_dir.rglob("*.nii.gz")):
        match = IXI_IMAGE_NAME.fullmatch(path.name)
        if match is None:
            continue
        subject, site, scan = match["subject"], match["site"], match["scan"]
        record = found.setdefault(subject, {"subject": subject, "site": site} | {f"path_{s}": "" for s in RAW_SCANS})
        if record["site"] != site:
            raise InventoryError(f"{subject}: images from two sites ({record['site']}, {site}), e.g. {path}")
        key = f"path_{scan}"
        if record[key]:
            raise InventoryError(f"{subject}: {scan} image found twice: {record[key]} and {path}; remove one")
        record[key] = str(path.resolve())
    table = pd.DataFrame(list(found.values()), columns=FILE_COLUMNS)
    return table.sort_values("subject").reset_index(drop=True)


def check_images(files: pd.DataFrame, scans: Sequence[str], threads: int) -> pd.DataFrame:
    """Fully load each present image of ``scans``; return (subject, reason) per bad subject.

    Loading decodes every voxel (``brainage.io.load_image``), which is what catches truncated
    gzip streams, empty files, non-3D images, NaNs and bad affines; a header that claims more
    data than its file holds is refused before anything is decoded. Any error of one image,
    even one the loader does not foresee, excludes that subject only. A subject with several
    bad images is reported once, for its first bad scan in ``scans`` order. Absent
    images are skipped: missing scans are the caller's rule, not an image fault.
    """
    missing = [f"path_{scan}" for scan in scans if f"path_{scan}" not in files]
    if missing:
        raise InventoryError(f"file table lacks column(s) {missing}; has {list(files.columns)}")
    jobs = [
        (row.subject, scan, getattr(row, f"path_{scan}"))
        for row in files.itertuples(index=False)
        for scan in scans
        if _present(getattr(row, f"path_{scan}"))
    ]
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        problems = list(pool.map(lambda job: _image_problem(*job), jobs))
    first: dict[str, str] = {}
    for (subject, _, _), problem in zip(jobs, problems, strict=True):
        if problem is not None:
            first.setdefault(subject, problem)
    return pd.DataFrame(sorted(first.items()), columns=["subject", "reason"])


def build_inventory(
    raw_dir: Path,
    sheet: Path,
    required_scans: Sequence[str],
    threads: int = 1,
    sheet_name: str = "Table",
    age_range: tuple[float, float] = AGE_RANGE,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Join IXI's images on disk with its demographics sheet; return (subjects, exclusions).

    The sheet is resolved by :func:`brainage.demographics.resolve_subjects` (ages outside
    ``age_range`` excluded), the images found by :func:`scan_raw`; :func:`join_inventory` says
    what the two tables become.
    """
    check_required_scans(required_scans)
    demographics, sheet_exclusions = resolve_subjects(read_demographics(Path(sheet), sheet_name), age_range)
    files = scan_raw(Path(raw_dir))
    return join_inventory(files, demographics, sheet_exclusions, required_scans, threads)


def check_required_scans(required_scans: Sequence[str]) -> None:
    """Refuse a required scan that is not one of the study's raw scans, before anything is read."""
    unknown = [scan for scan in required_scans if scan not in RAW_SCANS]
    if unknown:
        raise InventoryError(f"unknown scan {unknown}; IXI has {list(RAW_SCANS)}")


def join_inventory(
    files: pd.DataFrame,
    demographics: pd.DataFrame,
    demographic_exclusions: pd.DataFrame,
    required_scans: Sequence[str],
    threads: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Join the files one source found with its demographics; return (subjects, exclusions).

    ``files`` has :data:`FILE_COLUMNS`; ``demographics`` the usable subjects (subject, sex,
    age); ``demographic_exclusions`` (subject, reason) the ones the demographics exclude.
    ``subjects`` holds every subject seen on disk or in the demographics, with columns
    ``INVENTORY_COLUMNS``, sorted by subject. A subject is excluded, with every applicable
    reason joined by "; ", when it is absent from the demographics, excluded by them, has no
    images at all, or lacks a required scan. Only subjects that pass those checks have their
    required images loaded (slow), and a bad image excludes them too. ``exclusions`` is
    (subject, reason) for the excluded rows.
    """
    everyone = sorted(set(files["subject"]) | set(demographics["subject"]) | set(demographic_exclusions["subject"]))
    table = (
        pd.DataFrame({"subject": everyone})
        .merge(files[FILE_COLUMNS], on="subject", how="left")
        .merge(demographics[["subject", "sex", "age"]], on="subject", how="left")
    )
    for column in FILE_COLUMNS[1:]:
        table[column] = table[column].fillna("")

    excluded_by = dict(zip(demographic_exclusions["subject"], demographic_exclusions["reason"], strict=True))
    in_demographics = set(demographics["subject"]) | set(excluded_by)
    reasons = {
        row.subject: _record_problems(row, in_demographics, excluded_by, required_scans)
        for row in table.itertuples(index=False)
    }
    passing = table[[not reasons[s] for s in table["subject"]]]
    for bad in check_images(passing, required_scans, threads).itertuples(index=False):
        reasons[bad.subject].append(bad.reason)

    table["reason"] = ["; ".join(reasons[s]) for s in table["subject"]]
    table["included"] = table["reason"] == ""
    table = table[INVENTORY_COLUMNS].sort_values("subject").reset_index(drop=True)
    exclusions = table.loc[~table["included"], ["subject", "reason"]].reset_index(drop=True)
    return table, exclusions


def _record_problems(
    row: Any, in_demographics: set[str], excluded_by: dict[str, str], required: Sequence[str]
) -> list[str]:
    """Everything wrong with a subject that can be seen without opening an image."""
    problems = []
    if row.subject not in in_demographics:
        problems.append(NOT_IN_SHEET)
    if row.subject in excluded_by:
        problems.append(excluded_by[row.subject])
    present = [scan for scan in RAW_SCANS if _present(getattr(row, f"path_{scan}"))]
    if not present:
        problems.append(NO_IMAGES)
    else:
        missing = [scan for scan in required if scan not in present]
        if missing:
            problems.append(f"missing required modality {', '.join(missing)}")
    return problems


def _image_problem(subject: str, scan: str, path: str) -> str | None:
    """Why one image is unusable, or None; never raises, so one bad file cannot stop the inventory.

    An exception :func:`load_image` does not foresee still names the file: it excludes the
    subject with its type and message rather than ending the whole job with no file named.
    """
    try:
        load_image(path, subject)
    except ImageError as error:
        return f"bad {scan} image {error.path}: {error.reason}"
    except Exception as error:
        return f"bad {scan} image {path}: cannot be checked ({type(error).__name__}: {error})"
    return None


def _present(path: Any) -> bool:
    """A path cell holds a file: tables read back from CSV have NaN where we wrote ""."""
    return isinstance(path, str) and path != ""
