"""A BIDS dataset as a raw source: its T1, PD and angiogram files, and its participants' ages.

A lab keeps its own T1 and TOF-MRA data in BIDS (https://bids-specification.readthedocs.io)
rather than in IXI's layout. pybids validates the dataset and finds the files and their
entities; nothing here parses a BIDS file name. The study's raw scans are BIDS suffixes
(:data:`BIDS_SUFFIXES`), read from ``anat/`` NIfTI files only.

A subject of the inventory is a BIDS id as it appears in file names (:data:`brainage.paths.BIDS_SUBJECT`):
``sub-<label>``, or ``sub-<label>_ses-<label>`` for each session of a participant, who is one
row of ``participants.tsv``: a session inherits its participant's age, sex, site and exclusion
(:func:`per_session`). Exclusion reasons use :mod:`brainage.demographics`' words, so an inventory
reads the same whichever source it comes from.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

import pandas as pd
from bids import BIDSLayout, BIDSLayoutIndexer
from bids.exceptions import PyBIDSError

from brainage.demographics import AGE_RANGE, FEMALE, MALE, NO_AGE, implausible_age
from brainage.inventory import FILE_COLUMNS, InventoryError, check_required_scans, join_inventory
from brainage.paths import BIDS_PARTICIPANT
from brainage.vocabulary import MRA, PD, RAW_SCANS, T1

# The BIDS suffix of each raw scan of the study (brainage.vocabulary.RAW_SCANS).
BIDS_SUFFIXES: Final = {T1: "T1w", PD: "PDw", MRA: "angio"}
DESCRIPTION: Final = "dataset_description.json"
PARTICIPANTS: Final = "participants.tsv"
# BIDS writes a missing value as "n/a"; an empty cell is missing too.
_MISSING: Final = frozenset({"n/a", ""})
# participants.tsv sex codes (compared in lower case) that mean the inventory's labels; any other
# value, such as 1/2 whose meaning varies between labs, is kept as written.
_SEX_LABELS: Final = {"m": MALE, "male": MALE, "f": FEMALE, "female": FEMALE}
_PARTICIPANT_ID: Final = "participant_id"


class BidsError(InventoryError):
    """The BIDS dataset cannot be read as the study's raw source; the message names the file."""


def subject_id(participant: str, session: str | None = None) -> str:
    """The inventory's id of one participant's (session's) images: ``sub-01``, ``sub-01_ses-2``.

    ``participant`` and ``session`` are BIDS labels, without their ``sub-``/``ses-`` prefixes.
    """
    return f"sub-{participant}" if session is None else f"sub-{participant}_ses-{session}"


def participant_of(subject: str) -> str:
    """The participant (``sub-<label>``) whose images a :func:`subject_id` names."""
    return subject.partition("_ses-")[0]


def scan_bids(bids_dir: Path) -> pd.DataFrame:
    """One row per subject (participant or session) with images in the BIDS dataset ``bids_dir``.

    Columns are :data:`brainage.inventory.FILE_COLUMNS`, as :func:`brainage.inventory.scan_raw`
    returns for IXI: paths are absolute (symbolic links kept, so messages name the BIDS file
    even in a DataLad dataset), "" for a scan the subject lacks, and ``site`` is "" (BIDS file
    names carry no site). Only ``anat`` ``.nii.gz`` files of the :data:`BIDS_SUFFIXES` count;
    files that pybids' validator does not accept as BIDS are not seen. Two files for one scan
    of one subject (two runs, two acquisitions...) are a :class:`BidsError` naming them: which
    one is right is not a guess to make silently.
    """
    layout = _layout(bids_dir)
    scan_of = {suffix: scan for scan, suffix in BIDS_SUFFIXES.items()}
    found: dict[tuple[str, str], list[str]] = {}
    images = layout.get(datatype="anat", suffix=list(scan_of), extension=".nii.gz")
    for image in images:
        entities = image.get_entities()
        subject = subject_id(entities["subject"], entities.get("session"))
        found.setdefault((subject, scan_of[entities["suffix"]]), []).append(image.path)
    for (subject, scan), paths in sorted(found.items()):
        if len(paths) > 1:
            raise BidsError(
                f"{subject}: {len(paths)} {BIDS_SUFFIXES[scan]} images for its {scan} scan: "
                f"{', '.join(sorted(paths))}; keep one in the dataset"
            )
    subjects = sorted({subject for subject, _ in found})
    rows = [[subject, "", *(found.get((subject, scan), [""])[0] for scan in RAW_SCANS)] for subject in subjects]
    return pd.DataFrame(rows, columns=FILE_COLUMNS)


def read_participants(
    bids_dir: Path,
    age_column: str = "age",
    sex_column: str | None = "sex",
    site_column: str | None = None,
    age_range: tuple[float, float] = AGE_RANGE,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Ages, sexes and sites from the dataset's ``participants.tsv``; return (demographics, exclusions).

    ``demographics`` has columns subject (``sub-<label>``), sex, age, site: one row per usable
    participant, sorted. ``exclusions`` (subject, reason) holds the others: an age that is
    missing (``n/a`` or empty) is :data:`brainage.demographics.NO_AGE`; one that is not a number
    or lies outside ``age_range`` (inclusive) is :func:`brainage.demographics.implausible_age`.
    Sex codes m/male and f/female (any case) become the IXI sheet's labels; another code is kept
    as written, a missing one is NaN. ``site_column`` None gives every participant site "".

    The columns are named by the arguments; ``sex_column`` None means the file has none. A
    missing or empty file, a named column that is absent, or a participant_id that is not
    ``sub-<label>`` or appears twice is a :class:`BidsError` naming the file.
    """
    path = Path(bids_dir) / PARTICIPANTS
    if not path.is_file():
        raise BidsError(f"{path}: not found; a BIDS dataset gives its participants' ages in {PARTICIPANTS}")
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, encoding="utf-8")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise BidsError(f"{path}: cannot be read as a tab-separated UTF-8 table ({error})") from None
    wanted = {"participant id": _PARTICIPANT_ID, "age": age_column, "sex": sex_column, "site": site_column}
    for meaning, column in wanted.items():
        if column is not None and column not in table:
            raise BidsError(f"{path}: no {meaning} column {column!r}; columns: {', '.join(map(str, table.columns))}")
    if table.empty:
        raise BidsError(f"{path}: no participants below the header")
    table = table.map(str.strip)
    _check_participant_ids(table[_PARTICIPANT_ID], path)

    kept: list[dict[str, object]] = []
    excluded: list[dict[str, str]] = []
    for record in table.to_dict("records"):
        subject = record[_PARTICIPANT_ID]
        age, problem = _age(record[age_column], age_range)
        if problem is not None:
            excluded.append({"subject": subject, "reason": problem})
            continue
        sex = _sex(record[sex_column]) if sex_column is not None else math.nan
        site = "" if site_column is None or record[site_column] in _MISSING else record[site_column]
        kept.append({"subject": subject, "sex": sex, "age": age, "site": site})
    demographics = pd.DataFrame(kept, columns=["subject", "sex", "age", "site"])
    exclusions = pd.DataFrame(excluded, columns=["subject", "reason"])
    return (
        demographics.sort_values("subject").reset_index(drop=True),
        exclusions.sort_values("subject").reset_index(drop=True),
    )


def per_session(table: pd.DataFrame, subjects: Iterable[str]) -> pd.DataFrame:
    """``table`` (a ``subject`` column of participants) with each row repeated for every session.

    ``subjects`` are the ids :func:`scan_bids` found: a participant's row becomes one row per id
    of that participant (its sessions), and stays as it is when none was found, so a participant
    without images is still reported. Sorted by subject.
    """
    ids_of: dict[str, list[str]] = {}
    for subject in subjects:
        ids_of.setdefault(participant_of(subject), []).append(subject)
    expanded = table.assign(subject=[ids_of.get(p, [p]) for p in table["subject"]]).explode("subject")
    return expanded.sort_values("subject").reset_index(drop=True)


def build_bids_inventory(
    bids_dir: Path,
    required_scans: Sequence[str],
    threads: int = 1,
    age_column: str = "age",
    sex_column: str | None = "sex",
    site_column: str | None = None,
    age_range: tuple[float, float] = AGE_RANGE,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Join a BIDS dataset's images with its ``participants.tsv``; return (subjects, exclusions).

    The BIDS twin of :func:`brainage.inventory.build_inventory`, with the same columns and
    reasons (:func:`brainage.inventory.join_inventory`). The dataset is validated and indexed
    (:func:`scan_bids`), then ``participants.tsv`` read (:func:`read_participants`, which
    describes the column arguments), both before any image is opened. Every session of a
    participant is a subject of the inventory (:func:`per_session`). The site is the
    participants' ``site_column``; like sex and age, it stays empty for a participant that
    ``participants.tsv`` excludes, and for images of a participant it lacks.
    """
    check_required_scans(required_scans)
    files = scan_bids(bids_dir)
    demographics, exclusions = read_participants(bids_dir, age_column, sex_column, site_column, age_range)
    demographics = per_session(demographics, files["subject"])
    exclusions = per_session(exclusions, files["subject"])
    site = dict(zip(demographics["subject"], demographics["site"], strict=True))
    files["site"] = [site.get(subject, "") for subject in files["subject"]]
    return join_inventory(files, demographics, exclusions, required_scans, threads)


def _layout(bids_dir: Path) -> BIDSLayout:
    """The dataset indexed by pybids, its ``dataset_description.json`` validated; else a BidsError."""
    # abspath, not resolve: keep symbolic links (DataLad) so that paths name BIDS files.
    root = Path(os.path.abspath(bids_dir))
    if not root.is_dir():
        raise BidsError(f"{root}: BIDS dataset folder does not exist")
    try:
        # Sidecar JSON metadata is not indexed: the inventory needs none of it.
        return BIDSLayout(root, validate=True, indexer=BIDSLayoutIndexer(validate=True, index_metadata=False))
    except (PyBIDSError, ValueError) as error:
        reason = str(error).splitlines()[0].strip()
        raise BidsError(f"{root / DESCRIPTION}: not a valid BIDS dataset: {reason}") from None


def _check_participant_ids(ids: pd.Series, path: Path) -> None:
    valid = ids.str.fullmatch(BIDS_PARTICIPANT)
    if not valid.all():
        # Header is line 1, so table row i (0-based) is line i + 2.
        line, value = int(valid.idxmin()) + 2, ids[valid.idxmin()]
        raise BidsError(f"{path}: line {line}: participant_id {value!r} is not sub-<label> (label: letters, digits)")
    repeated = sorted(set(ids[ids.duplicated()]))
    if repeated:
        raise BidsError(f"{path}: participant_id appears more than once: {', '.join(repeated)}")


def _age(text: str, age_range: tuple[float, float]) -> tuple[float, str | None]:
    """The age in a cell and None, or NaN and why the cell excludes its participant."""
    if text in _MISSING:
        return math.nan, NO_AGE
    try:
        age = float(text)
    except ValueError:
        return math.nan, implausible_age(text, age_range)
    if math.isnan(age):
        return math.nan, NO_AGE
    low, high = age_range
    if not low <= age <= high:
        return math.nan, implausible_age(f"{age:g}", age_range)
    return age, None


def _sex(text: str) -> object:
    if text in _MISSING:
        return math.nan
    return _SEX_LABELS.get(text.lower(), text)
