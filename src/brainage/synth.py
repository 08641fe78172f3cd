"""A synthetic IXI-like dataset whose anatomy carries a known, hidden age signal.

The workflow's default input is generated here, laid out exactly like the real IXI download
(``IXI-T1/IXI002-Guys-0828-T1.nii.gz``, ``IXI-PD/...-PD.nii.gz``, ``IXI-MRA/...-MRA.nii.gz`` and
an ``IXI.xls`` demographics sheet with the real sheet's quirks), so every later stage runs the
same code on synthetic and real data, and on synthetic data its answers can be checked.

Anatomy. The head is the MNI152 2009a symmetric template that nilearn ships (T1, GM and WM
probability maps, brain-extracted, 1 mm). Intracranial volume (ICV) is the template's non-zero
region; CSF is ICV minus GM and WM; the lateral ventricles are the CSF compartment flood-filled
from two seeds; skull and scalp are shells grown outward from the ICV, with a soft-tissue neck
below. A subject's hidden biological age ``bio_age`` drives, in every modality:

* global atrophy: the brain (GM, WM, ventricles) shrinks about the brain centre inside a fixed
  skull, so sulcal and extra-axial CSF widens;
* cortical thinning: the GM partial-volume rim is eroded and becomes CSF;
* ventricular enlargement: the ventricles dilate into the surrounding white matter, faster when
  old;
* in the TOF-MRA, the arterial tree (:func:`vessel_tree`) loses small branches, its distal
  signal falls and its tortuosity rises.

Coordinates and ground truth. "Head coordinates" are the template's RAS millimetres (MNI152
2009a sym space) of the subject's own anatomy. Each scan has its own 4x4 ``head_to_scanner``
matrix (RAS mm to RAS mm): a session pose shared by all scans times a per-scan rigid motion
(rotations up to 5 degrees, translations up to 5 mm, drawn from ``(seed, subject)``), so the
scans of one subject must be registered for real. The convention is: the image intensity at
scanner point ``x`` is the anatomy at head point ``inv(head_to_scanner) @ x``; equivalently
voxel ``ijk`` shows head point ``inv(head_to_scanner) @ affine @ ijk``. The truth file
``<subject>.json`` holds subject, age, bio_age, sex, site and ``head_to_scanner`` for T1, PD
and MRA as nested lists.

Acquisition. Matrix sizes and voxel spacings follow IXI at ``scale=1`` (matrix times ``scale``,
spacing divided by ``scale``, so the field of view stays fixed): T1 256x256x150 sagittal
(stored P-S-R, not RAS), PD 256x256x130 axial, MRA 512x512x100 axial slab of 80 mm set low over
the circle of Willis rather than centred on the head. Each image gets a smooth multiplicative
bias field, Rician noise and a site-dependent gain, and is stored as int16 with qform and sform
set to the scanner frame (code 1).
"""

from __future__ import annotations

import datetime
import functools
import importlib.util
import math
import os
import shutil
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from brainage.io import atomic_path, save_image, write_json, write_table

MODALITIES = ("T1", "PD", "MRA")
SITES = ("Guys", "HH", "IOP")
USABLE_STATUSES = ("ok", "zero_duplicate")

_SITE_WEIGHTS = (0.55, 0.32, 0.13)
# Series numbers run per site from these bases, like IXI's "Guys-0828", "HH-1211", "IOP-0873".
_SITE_SERIES_BASE = {"Guys": 800, "HH": 1200, "IOP": 850}
# Scanners differ in receiver gain: the same tissue reads differently per site.
_SITE_GAIN = {"Guys": 1.0, "HH": 1.3, "IOP": 0.8}

# IXI's age histogram by decade (20-30, ..., 80-90): flat to 70, thin at the old end.
_AGE_BIN_EDGES = (20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 86.0)
_AGE_BIN_WEIGHTS = (102, 99, 89, 102, 129, 58, 10)
_DAYS_PER_YEAR = 365.25

# Fractions of the imaged cohort carrying each quirk of the real data.
_ZERO_DUPLICATE_FRACTION = 0.05
_CONFLICTING_AGE_FRACTION = 1 / 150  # the real sheet has 2 in ~600
_NO_AGE_FRACTION = 0.03
_NO_MRA_FRACTION = 0.04
_SHEET_ONLY_FRACTION = 0.03
_MIN_FOR_ALL_QUIRKS = 12

# IXI scanned from June 2005 to December 2006 (Excel day numbers, 1900 date system).
_FIRST_STUDY_DAY = 38504
_LAST_STUDY_DAY = 39055
_EXCEL_EPOCH = datetime.date(1899, 12, 30)
_DATE_FORMAT = "yyyy\\-mm\\-dd;@"

_TABLE_HEADER = (
    "IXI_ID",
    "SEX_ID (1=m, 2=f)",
    "HEIGHT",
    "WEIGHT",
    "ETHNIC_ID",
    "MARITAL_ID",
    "OCCUPATION_ID",
    "QUALIFICATION_ID",
    "DOB",
    "DATE_AVAILABLE",
    "STUDY_DATE",
    "AGE",
)
_CODE_SHEETS: dict[str, tuple[str, tuple[tuple[int, str], ...]]] = {
    "Ethnicity": (
        "ETHNIC",
        ((1, "White"), (4, "Black or Black British"), (3, "Asian or Asian British"), (5, "Chinese"), (6, "Other")),
    ),
    "Marital Status": (
        "MARITAL",
        ((1, "Single"), (2, "Married"), (4, "Divorced or Separated"), (3, "Cohabiting"), (5, "Widowed")),
    ),
    "Occupation": (
        "OCCUPATION",
        (
            (1, "Go out to full time employment"),
            (2, "Go out to part time employment (<25hrs)"),
            (3, "Study at college or university"),
            (4, "Full-time housework"),
            (5, "Retired"),
            (6, "Unemployed"),
            (7, "Work for pay at home"),
            (8, "Other"),
        ),
    ),
    "Qualification": (
        "QUALIFICATION",
        (
            (1, "No qualifications"),
            (2, "O-levels, GCSEs, or CSEs"),
            (3, "A-levels"),
            (4, "Further education e.g. City & Guilds / NVQs"),
            (5, "University or Polytechnic degree"),
        ),
    ),
}
# Code 2 is used in the table but missing from the Ethnicity sheet, as in the real file.
_ETHNIC_WEIGHTS = {1: 0.82, 3: 0.09, 2: 0.03, 4: 0.03, 5: 0.02, 6: 0.01}
_MARITAL_WEIGHTS = {1: 0.34, 2: 0.40, 3: 0.10, 4: 0.09, 5: 0.07}
_QUALIFICATION_WEIGHTS = {5: 0.55, 4: 0.19, 2: 0.09, 1: 0.09, 3: 0.08}


# ---------------------------------------------------------------------------------------------
# Cohort plan
# ---------------------------------------------------------------------------------------------


def plan_cohort(n_subjects: int, seed: int, bio_age_sigma: float = 3.0) -> pd.DataFrame:
    """Return the deterministic cohort: one row per imaged subject plus sheet-only rows.

    Columns: subject, ixi_id, site, series, sex, age, bio_age, has_mra, sheet_status, imaged.
    ``age`` is a whole number of days over 365.25, so the spreadsheet can hold it exactly as
    (STUDY_DATE - DOB) / 365.25. Quirk counts scale with ``n_subjects`` (each rounded, and at
    least one of each when ``n_subjects >= 12``) and never overlap, so a quirk's effect can be
    tested alone. The per-scan head motion is not a column: :func:`synthesize_subject` draws it
    from ``(seed, subject)``, and the truth JSON records it.
    """
    if n_subjects < 1:
        raise ValueError(f"n_subjects must be at least 1, got {n_subjects}")
    rng = _rng(seed, "cohort")
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
            "subject": [f"IXI{ixi_id:03d}" for ixi_id in ixi_ids],
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
    return np.round(years * _DAYS_PER_YEAR) / _DAYS_PER_YEAR


def _series_numbers(sites: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-site running series numbers that grow with the id, as the scanners' counters did."""
    counters = dict(_SITE_SERIES_BASE)
    series = np.empty(len(sites), dtype=int)
    for index, site in enumerate(sites):
        counters[site] += int(rng.integers(1, 4))
        series[index] = counters[site]
    return series


def subject_files(row: Mapping) -> dict[str, str]:
    """Relative paths of a subject's raw images under the raw root, keyed by modality."""
    stem = f"{row['subject']}-{row['site']}-{int(row['series']):04d}"
    modalities = MODALITIES if bool(row["has_mra"]) else ("T1", "PD")
    return {modality: f"IXI-{modality}/{stem}-{modality}.nii.gz" for modality in modalities}


def write_ground_truth_table(plan: pd.DataFrame, path: Path) -> None:
    """Write the hidden truth (age, bio_age, MRA presence, sheet quirk) of the imaged subjects."""
    columns = ["subject", "age", "bio_age", "has_mra", "sheet_status"]
    write_table(plan.loc[plan["imaged"], columns].reset_index(drop=True), path)


def _rng(seed: int, *keys: str) -> np.random.Generator:
    """An independent random stream per (seed, purpose, subject...), stable across processes."""
    # crc32, not hash(): str hashes are salted per process, which would break reproducibility.
    return np.random.default_rng([seed, *(zlib.crc32(key.encode()) for key in keys)])


# ---------------------------------------------------------------------------------------------
# Demographics spreadsheet
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ExcelDay:
    """A date cell: an Excel day number shown with a date format, as the real sheet stores it."""

    day: int


_Cell = float | str | _ExcelDay


def write_demographics(plan: pd.DataFrame, path: Path, seed: int) -> None:
    """Write an ``IXI.xls`` (legacy Excel) with the layout and the quirks of the real sheet.

    Rows are sorted by IXI_ID. ``zero_duplicate`` subjects get their complete row followed by a
    copy with HEIGHT to QUALIFICATION_ID zeroed (sex, DOB, dates and AGE kept, as in the real
    file); ``conflicting_age`` subjects get a second row whose DOB (a date cell, not text)
    differs, so the two AGEs disagree; ``no_age`` rows have an empty-text AGE and either no
    STUDY_DATE or no DOB; ``absent`` subjects have no row; sheet-only subjects have normal rows.
    AGE always equals (STUDY_DATE - DOB) / 365.25 where both exist.
    """
    import xlwt  # only this step needs it; the per-subject jobs should not pay for the import

    rng = _rng(seed, "demographics")
    date_style = xlwt.easyxf(num_format_str=_DATE_FORMAT)
    book = xlwt.Workbook()
    table = book.add_sheet("Table")
    _write_row(table, 0, _TABLE_HEADER, date_style)
    study_dates: list[tuple[float, _Cell]] = []
    row_index = 1
    no_age_seen = 0
    for record in plan.sort_values("ixi_id").itertuples(index=False):
        if record.sheet_status == "absent":
            continue
        rows = _sheet_rows(record, rng, no_age_variant=no_age_seen % 2)
        no_age_seen += record.sheet_status == "no_age"
        for cells in rows:
            _write_row(table, row_index, [cells[name] for name in _TABLE_HEADER], date_style)
            row_index += 1
        if isinstance(rows[0]["STUDY_DATE"], _ExcelDay):
            study_dates.append((rows[0]["IXI_ID"], rows[0]["STUDY_DATE"]))
    for name, (label, codes) in _CODE_SHEETS.items():
        sheet = book.add_sheet(name)
        _write_row(sheet, 0, ("ID", label), date_style)
        for index, (code, text) in enumerate(codes, start=1):
            _write_row(sheet, index, (float(code), text), date_style)
    dates_sheet = book.add_sheet("Study Date")
    _write_row(dates_sheet, 0, ("ixi_id", "study_date"), date_style)
    for index, cells in enumerate(study_dates, start=1):
        _write_row(dates_sheet, index, cells, date_style)
    with atomic_path(path) as tmp:
        book.save(str(tmp))


def _sheet_rows(record: Any, rng: np.random.Generator, no_age_variant: int) -> list[dict[str, _Cell]]:
    """The spreadsheet rows of one plan record (one, or two for duplicated ids), by column."""
    age_days = round(record.age * _DAYS_PER_YEAR)
    study_day = int(rng.integers(_FIRST_STUDY_DAY, _LAST_STUDY_DAY + 1))
    birth_day = study_day - age_days
    height, weight = _body_size(int(record.sex), rng)
    ethnic, marital, occupation, qualification = _social_codes(float(record.age), rng)
    complete: dict[str, _Cell] = {
        "IXI_ID": float(record.ixi_id),
        "SEX_ID (1=m, 2=f)": float(record.sex),
        "HEIGHT": height,
        "WEIGHT": weight,
        "ETHNIC_ID": ethnic,
        "MARITAL_ID": marital,
        "OCCUPATION_ID": occupation,
        "QUALIFICATION_ID": qualification,
        "DOB": _iso_date(birth_day),
        "DATE_AVAILABLE": 1.0,
        "STUDY_DATE": _ExcelDay(study_day),
        "AGE": age_days / _DAYS_PER_YEAR,
    }
    status = record.sheet_status
    if status == "no_age" and no_age_variant == 0:
        # Like most real rows without an age: the study date was never made available.
        return [{**complete, "DATE_AVAILABLE": 0.0, "STUDY_DATE": "", "AGE": ""}]
    if status == "no_age":
        # The rarer real variant: a study date but no date of birth.
        return [{**complete, "DOB": "", "AGE": ""}]
    if status == "zero_duplicate":
        return [complete, {**complete, **dict.fromkeys(_TABLE_HEADER[2:8], 0.0)}]
    if status == "conflicting_age":
        other_birth = birth_day + int(rng.integers(60, 5 * 365)) * int(rng.choice([-1, 1]))
        other_height, other_weight = _body_size(int(record.sex), rng)
        other = {
            **complete,
            "HEIGHT": other_height,
            "WEIGHT": other_weight,
            # The real conflicting row stores its DOB as a date cell, not text.
            "DOB": _ExcelDay(other_birth),
            "AGE": (study_day - other_birth) / _DAYS_PER_YEAR,
        }
        return [complete, other]
    return [complete]


def _body_size(sex: int, rng: np.random.Generator) -> tuple[float, float]:
    """Height (cm) and weight (kg), zero now and then as in the real sheet's missing values."""
    if rng.random() < 0.05:
        return 0.0, 0.0
    height = rng.normal(177.0, 7.0) if sex == 1 else rng.normal(163.0, 6.5)
    weight = rng.normal(80.0, 12.0) if sex == 1 else rng.normal(65.0, 11.0)
    return float(round(height)), float(round(weight))


def _social_codes(age: float, rng: np.random.Generator) -> tuple[float, float, float, float]:
    """Ethnic, marital, occupation and qualification codes; retirement follows age."""
    if rng.random() < 0.05:
        return 0.0, 0.0, 0.0, 0.0
    occupation = 5 if age > 63 and rng.random() < 0.85 else int(rng.choice([1, 1, 1, 2, 3, 4, 6, 7, 8]))
    return (
        float(_weighted_choice(_ETHNIC_WEIGHTS, rng)),
        float(_weighted_choice(_MARITAL_WEIGHTS, rng)),
        float(occupation),
        float(_weighted_choice(_QUALIFICATION_WEIGHTS, rng)),
    )


def _weighted_choice(weights: Mapping[int, float], rng: np.random.Generator) -> int:
    codes = list(weights)
    probabilities = np.asarray(list(weights.values()))
    return int(codes[rng.choice(len(codes), p=probabilities / probabilities.sum())])


def _iso_date(excel_day: int) -> str:
    return (_EXCEL_EPOCH + datetime.timedelta(days=excel_day)).isoformat()


def _write_row(sheet: Any, row_index: int, cells: Sequence[_Cell], date_style: Any) -> None:
    row = sheet.row(row_index)
    for column, value in enumerate(cells):
        if isinstance(value, _ExcelDay):
            row.set_cell_number(column, float(value.day), date_style)
        elif isinstance(value, str):
            # set_cell_text keeps "" as an empty text cell, like the real sheet's missing values;
            # xlwt's write() would turn it into a blank cell instead.
            row.set_cell_text(column, value)
        else:
            row.set_cell_number(column, float(value))


# ---------------------------------------------------------------------------------------------
# Template anatomy
# ---------------------------------------------------------------------------------------------

_TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
# Centre of the brain in head (template) mm: the pivot of atrophy and of head motion.
_BRAIN_CENTRE_MM = (0.0, -18.0, 12.0)
# Seeds inside the left and right lateral ventricles, in template mm.
_VENTRICLE_SEEDS_MM = ((-14.0, -15.0, 15.0), (14.0, -15.0, 15.0))
# A box (template mm) that holds the lateral and third ventricles with a margin.
_VENTRICLE_BOX_MM = ((-40.0, -62.0, -8.0), (40.0, 36.0, 34.0))
# The ventricle map is 1 in the template's ventricles and falls by 0.1 per mm away from them
# (out to this many mm), so lower levels of it are larger ventricles.
_VENTRICLE_REACH_MM = 8
# The template stops 1 mm below the cerebellum; the head is extended down for the neck.
_NECK_PAD_MM = 40
_NECK_TOP_MM = -60.0
# Skull and scalp are level sets of the ICV blurred with this sigma, on a coarse grid: the
# skull is the inner band (about 0-5 mm out), the scalp the outer one (about 5-11 mm out).
_SHELL_STEP_MM = 4
_SHELL_SIGMA_MM = 6.0
_SKULL_LEVEL = 0.2
_SCALP_LEVEL = 0.035
_HEAD_LEVEL = 0.6 * _SCALP_LEVEL  # below this level of the shell map there is only air


@dataclass(frozen=True)
class _Grid:
    """Maps sampled on a regular grid: ``values`` is (X, Y, Z, channels) with a zero border,
    so interpolation outside reads zero; ``affine`` maps its voxels to head mm."""

    values: np.ndarray
    affine: np.ndarray


@dataclass(frozen=True)
class _Anatomy:
    """The template anatomy, ready to be aged and sampled."""

    icv: _Grid  # intracranial fraction: fixed by the skull, so it does not shrink with age
    shell: _Grid  # blurred ICV, whose levels give the skull and scalp
    brain: _Grid  # channels GM, WM and the ventricle map (see _VENTRICLE_REACH_MM): these age


def _template_dir() -> Path:
    # find_spec locates the data without importing nilearn.datasets, which takes over a second.
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("nilearn is not installed; its MNI152 templates are the synthetic anatomy")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data"


def _working_step(scale: float) -> int:
    """Working-grid step in mm: about half the output voxel, never finer than the template."""
    return max(1, round(0.9375 / scale / 2))


@functools.cache
def _anatomy(step: int) -> _Anatomy:
    """Load the templates once per process and derive the tissue maps on a ``step``-mm grid.

    Maps are written straight into their final bordered, neck-padded arrays: full-size
    temporaries cost more than the arithmetic here, and this runs in every subject's job.
    """
    folder = _template_dir()
    images = {key: nib.load(folder / name) for key, name in _TEMPLATE_FILES.items()}
    t1, gm, wm = (np.asarray(images[key].dataobj, dtype=np.uint8) for key in ("t1", "gm", "wm"))
    affine = images["t1"].affine
    icv = t1 > 0

    neck_slices = math.ceil(_NECK_PAD_MM / step)
    icv_grid = _empty_grid(icv.shape, affine, step, neck_slices, channels=1)
    brain_grid = _empty_grid(icv.shape, affine, step, neck_slices, channels=3)
    _block_mean_into(icv, step, _interior(icv_grid, neck_slices, 0))
    _block_mean_into(gm, step, _interior(brain_grid, neck_slices, 0), full=255)
    _block_mean_into(wm, step, _interior(brain_grid, neck_slices, 1), full=255)
    corner, ventricles = _lateral_ventricles(icv, gm, wm, affine, step)
    template_origin = (1, 1, 1 + neck_slices)  # grid index of the template's first block
    placed = tuple(
        slice(o + c, o + c + n) for o, c, n in zip(template_origin, corner, ventricles.shape, strict=True)
    )
    brain_grid.values[(*placed, 2)] = ventricles
    return _Anatomy(icv=icv_grid, shell=_shell(icv, affine), brain=brain_grid)


def _empty_grid(
    template_shape: tuple[int, ...], affine: np.ndarray, step: int, neck_slices: int, channels: int
) -> _Grid:
    """Zeros for a ``step``-mm grid over the template, with neck slices below and a zero border."""
    shape = (
        template_shape[0] // step + 2,
        template_shape[1] // step + 2,
        template_shape[2] // step + neck_slices + 2,
        channels,
    )
    shift = np.eye(4)
    shift[:3, 3] = (-1.0, -1.0, -1.0 - neck_slices)
    return _Grid(np.zeros(shape, dtype=np.float32), _block_affine(affine, step) @ shift)


def _interior(grid: _Grid, neck_slices: int, channel: int) -> np.ndarray:
    """The view of one channel of a grid that covers the template itself."""
    return grid.values[1:-1, 1:-1, 1 + neck_slices : -1, channel]


def _shell(icv: np.ndarray, affine: np.ndarray) -> _Grid:
    """Blurred ICV on a coarse grid, continued below the template as a soft-tissue neck."""
    neck_slices = math.ceil(_NECK_PAD_MM / _SHELL_STEP_MM)
    grid = _empty_grid(icv.shape, affine, _SHELL_STEP_MM, neck_slices, channels=1)
    _block_mean_into(icv, _SHELL_STEP_MM, _interior(grid, neck_slices, 0))
    shell = grid.values[..., 0]
    shell[...] = _gaussian_blur(shell, _SHELL_SIGMA_MM / _SHELL_STEP_MM)
    z_mm = grid.affine[2, 3] + grid.affine[2, 2] * np.arange(shell.shape[2])
    top = int(np.argmin(np.abs(z_mm - _NECK_TOP_MM)))
    # Capped below the skull level, the neck reads as scalp-like soft tissue, not bone.
    neck = np.minimum(shell[:, :, top], (_SKULL_LEVEL + _SCALP_LEVEL) / 2)
    shell[:, :, 1:top] = np.maximum(shell[:, :, 1:top], neck[:, :, None])
    # Restore the zero border that makes points outside the grid read zero.
    shell[[0, -1], :, :] = 0.0
    shell[:, [0, -1], :] = 0.0
    shell[:, :, [0, -1]] = 0.0
    return grid


def _lateral_ventricles(
    icv: np.ndarray, gm: np.ndarray, wm: np.ndarray, affine: np.ndarray, step: int
) -> tuple[tuple[int, int, int], np.ndarray]:
    """The ventricle map (see ``_VENTRICLE_REACH_MM``) on the ``step`` grid, in a box.

    Returns the box's first working-grid voxel and the map. The ventricles are the CSF
    connected to two seeds, found by flood fill at 1 mm: thresholding CSF alone also catches
    sulci and cisterns, and connectivity separates them from the subarachnoid space. Repeated
    dilation in a cropped box costs ~0.1 s and spares importing scipy (~0.4 s) in every job.
    """
    to_voxel = np.linalg.inv(affine)
    low, high = (np.round(_apply(to_voxel, np.array(corner))).astype(int) for corner in _VENTRICLE_BOX_MM)
    # Align the box to whole working-grid blocks, with room for the map to reach out.
    margin = math.ceil(_VENTRICLE_REACH_MM / step) + 1
    first_block = low // step - margin
    n_blocks = (high + 1) // step + margin - first_block
    box = tuple(slice(b * step, (b + n) * step) for b, n in zip(first_block, n_blocks, strict=True))
    csf = icv[box] & ((gm[box].astype(np.int16) + wm[box]) < 128)
    region = np.zeros_like(csf)
    for seed_mm in _VENTRICLE_SEEDS_MM:
        centre = np.round(_apply(to_voxel, np.array(seed_mm))).astype(int) - first_block * step
        # The seed point may fall on the septum; start from the most CSF-like voxel near it.
        near = tuple(slice(c - 5, c + 6) for c in centre)
        offset = np.unravel_index(np.argmax(csf[near]), csf[near].shape)
        region[tuple(centre - 5 + np.asarray(offset))] = True
    size = -1
    while size != int(region.sum()):
        size = int(region.sum())
        for _ in range(8):
            region = _dilate6(region) & csf
    # Distance layers around the ventricles; alternating face and cube neighbourhoods make the
    # grown shells roughly round rather than diamond-shaped.
    levels = region.astype(np.uint8) * 10
    reached = region
    for distance in range(1, _VENTRICLE_REACH_MM + 1):
        grown = _dilate26(reached) if distance % 2 == 0 else _dilate6(reached)
        levels[grown & ~reached] = 10 - distance
        reached = grown
    ventricle_map = np.zeros(tuple(n_blocks), dtype=np.float32)
    _block_mean_into(levels, step, ventricle_map, full=10)
    return tuple(int(b) for b in first_block), ventricle_map


def _dilate6(mask: np.ndarray) -> np.ndarray:
    """Grow a mask by one voxel across faces (6-connectivity)."""
    grown = mask.copy()
    grown[1:] |= mask[:-1]
    grown[:-1] |= mask[1:]
    grown[:, 1:] |= mask[:, :-1]
    grown[:, :-1] |= mask[:, 1:]
    grown[:, :, 1:] |= mask[:, :, :-1]
    grown[:, :, :-1] |= mask[:, :, 1:]
    return grown


def _dilate26(mask: np.ndarray) -> np.ndarray:
    """Grow a mask by one voxel into the whole 3x3x3 cube, one axis at a time."""
    grown = mask
    for axis in range(3):
        shifted = grown.copy()
        front = [slice(None)] * 3
        back = [slice(None)] * 3
        front[axis], back[axis] = slice(1, None), slice(None, -1)
        shifted[tuple(front)] |= grown[tuple(back)]
        shifted[tuple(back)] |= grown[tuple(front)]
        grown = shifted
    return grown


def _block_mean_into(volume: np.ndarray, step: int, out: np.ndarray, full: int = 1) -> None:
    """Average step^3 blocks of an integer volume (0..``full``) into ``out`` as fractions.

    Partial-volume fractions stay fractions. Summing strided views into an integer
    accumulator is several times faster than a float reshape-and-mean.
    """
    shape = out.shape
    total = np.zeros(shape, dtype=np.uint32 if step**3 * full > np.iinfo(np.uint16).max else np.uint16)
    for i in range(step):
        for j in range(step):
            for k in range(step):
                total += volume[i : shape[0] * step : step, j : shape[1] * step : step, k : shape[2] * step : step]
    np.multiply(total, np.float32(1.0 / (step**3 * full)), out=out)


def _block_affine(affine: np.ndarray, step: int) -> np.ndarray:
    """Voxel-to-mm affine of a grid of step^3 blocks: block i is centred on voxel step*i+(step-1)/2."""
    blocks = np.diag([step, step, step, 1.0])
    blocks[:3, 3] = (step - 1) / 2
    return affine @ blocks


def _gaussian_blur(volume: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (zero outside), as one small matrix product per axis."""
    blurred = volume
    for axis, n in enumerate(volume.shape):
        positions = np.arange(n)
        kernel = np.exp(-0.5 * ((positions[:, None] - positions[None, :]) / sigma) ** 2).astype(np.float32)
        kernel /= np.float32(sigma * math.sqrt(2.0 * math.pi))
        blurred = np.moveaxis(np.tensordot(blurred, kernel, axes=([axis], [0])), -1, axis)
    return np.ascontiguousarray(blurred, dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# Age effects and tissue rendering
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _AgeEffects:
    """How one biological age deforms the template anatomy."""

    brain_scale: float  # linear size of the brain inside a fixed skull
    gm_erosion: float  # GM partial-volume level below which the cortical rim turns to CSF
    ventricle_level: float  # level of the ventricle map down to which tissue is ventricle


def _age_fraction(bio_age: float) -> float:
    """Biological age mapped to 0 at 20 years and 1 at 85, a little beyond for outliers."""
    return float(np.clip((bio_age - 20.0) / 65.0, -0.15, 1.2))


def _age_effects(bio_age: float) -> _AgeEffects:
    """The anatomy's age changes; biological ages under 20 keep the template's ventricles."""
    a = _age_fraction(bio_age)
    older = max(a, 0.0)
    # About 13% brain volume lost from 20 to 85; ventricles grow 3-4 fold (17 to ~60 ml by 80),
    # faster late in life.
    return _AgeEffects(
        brain_scale=1.0 - 0.045 * a,
        gm_erosion=0.2 * older,
        ventricle_level=0.9 - 0.45 * (0.35 * older + 0.65 * older**2),
    )


_TISSUES = ("gm", "wm", "csf", "skull", "scalp")
_CONTRAST: dict[str, dict[str, float]] = {
    # T1: WM > GM > CSF, bright scalp fat, dark bone.
    "T1": {"gm": 0.60, "wm": 1.00, "csf": 0.18, "skull": 0.06, "scalp": 0.70},
    # PD: CSF > GM > WM.
    "PD": {"gm": 0.80, "wm": 0.64, "csf": 1.00, "skull": 0.08, "scalp": 0.72},
    # TOF-MRA: stationary tissue is saturated and dim; only inflowing blood is bright.
    "MRA": {"gm": 0.17, "wm": 0.13, "csf": 0.07, "skull": 0.03, "scalp": 0.25},
}
_FULL_SCALE = {"T1": 900.0, "PD": 1000.0, "MRA": 800.0}
_NOISE_SIGMA = 0.02
_BIAS_STRENGTH = 0.04
_CHUNK_VOXELS = 1 << 21


def _render_tissue(
    shape: tuple[int, int, int],
    voxel_to_head: np.ndarray,
    effects: _AgeEffects,
    anatomy: _Anatomy,
    contrast: Mapping[str, float],
) -> np.ndarray:
    """Noise-free image of the aged anatomy on a voxel grid, one slab of slices at a time."""
    centre = np.asarray(_BRAIN_CENTRE_MM)
    # A smaller brain at a voxel means the template is sampled farther from the centre.
    shrink = np.eye(4)
    shrink[:3, :3] /= effects.brain_scale
    shrink[:3, 3] = centre - centre / effects.brain_scale
    image = np.empty(shape, dtype=np.float32)
    slices_per_chunk = max(1, _CHUNK_VOXELS // (shape[0] * shape[1]))
    for k0 in range(0, shape[2], slices_per_chunk):
        k1 = min(shape[2], k0 + slices_per_chunk)
        ijk = np.indices((shape[0], shape[1], k1 - k0), dtype=np.float32).reshape(3, -1)
        ijk[2] += k0
        shell = _sample(anatomy.shell, voxel_to_head, ijk)[:, 0]
        # Most of a field of view is air: sample the fine maps only inside the head.
        in_head = shell > _HEAD_LEVEL
        head_ijk = ijk[:, in_head]
        fractions = _tissue_fractions(
            icv=_sample(anatomy.icv, voxel_to_head, head_ijk)[:, 0],
            shell=shell[in_head],
            brain=_sample(anatomy.brain, shrink @ voxel_to_head, head_ijk),
            effects=effects,
        )
        slab = np.zeros(ijk.shape[1], dtype=np.float32)
        slab[in_head] = sum(contrast[tissue] * fractions[tissue] for tissue in _TISSUES)
        image[:, :, k0:k1] = slab.reshape(shape[0], shape[1], k1 - k0)
    return image


def _tissue_fractions(
    icv: np.ndarray, shell: np.ndarray, brain: np.ndarray, effects: _AgeEffects
) -> dict[str, np.ndarray]:
    """Tissue fractions from sampled template maps: a fixed skull around an aged brain."""
    gm, wm, ventricle_map = brain.T
    gm = np.clip((gm - effects.gm_erosion) / (1.0 - effects.gm_erosion), 0.0, 1.0)
    ventricles = np.clip((ventricle_map - effects.ventricle_level) / 0.1, 0.0, 1.0)
    gm = gm * (1.0 - ventricles) * icv
    wm = wm * (1.0 - ventricles) * icv
    outside = 1.0 - icv
    skull = outside * _ramp(shell, _SKULL_LEVEL * 0.75, _SKULL_LEVEL * 1.25)
    head = _ramp(shell, _HEAD_LEVEL, _SCALP_LEVEL * 1.4)
    return {
        "gm": gm,
        "wm": wm,
        "csf": np.clip(icv - gm - wm, 0.0, 1.0),
        "skull": skull,
        "scalp": np.clip(outside * head - skull, 0.0, 1.0),
    }


def _ramp(values: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.clip((values - low) / (high - low), 0.0, 1.0)


def _sample(grid: _Grid, voxel_to_head: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    """Trilinear samples, (N, channels), of a grid at scan voxels ``ijk`` (3, N).

    Points outside are clamped onto the grid's zero border, so they read zero. Written with
    numpy because scipy.ndimage costs ~0.4 s to import in every subject's job.
    """
    points = _apply_grid(np.linalg.inv(grid.affine) @ voxel_to_head, ijk)
    shape = grid.values.shape[:3]
    table = grid.values.reshape(-1, grid.values.shape[3])
    strides = (shape[1] * shape[2], shape[2], 1)
    index = np.zeros(ijk.shape[1], dtype=np.intp)
    fractions = []
    for axis in range(3):
        coordinate = np.clip(points[axis], 0.0, shape[axis] - 1.001)
        base = coordinate.astype(np.intp)  # floor, as the coordinate is non-negative
        index += base * strides[axis]
        fractions.append((coordinate - base.astype(np.float32))[:, None])

    def corner(di: int, dj: int, dk: int) -> np.ndarray:
        # np.take: several times faster than fancy indexing for row gathers.
        return np.take(table, index + (di * strides[0] + dj * strides[1] + dk * strides[2]), axis=0)

    def lerp(low: np.ndarray, high: np.ndarray, fraction: np.ndarray) -> np.ndarray:
        return low + (high - low) * fraction

    fi, fj, fk = fractions
    return lerp(
        lerp(lerp(corner(0, 0, 0), corner(0, 0, 1), fk), lerp(corner(0, 1, 0), corner(0, 1, 1), fk), fj),
        lerp(lerp(corner(1, 0, 0), corner(1, 0, 1), fk), lerp(corner(1, 1, 0), corner(1, 1, 1), fk), fj),
        fi,
    )


def _apply(matrix: np.ndarray, point: np.ndarray) -> np.ndarray:
    return matrix[:3, :3] @ point + matrix[:3, 3]


def _apply_grid(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 affine to (3, N) points, in float32."""
    return (matrix[:3, :3].astype(np.float32) @ points) + matrix[:3, 3:4].astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Arterial tree
# ---------------------------------------------------------------------------------------------

# Signal the rasterized tree must reach for a voxel to count as vessel in the truth mask.
_VISIBLE_SIGNAL = 0.15
_MIN_RADIUS_MM = 0.3
_CHILD_RADIUS_RATIO = 0.72
# Path length from the skull base to where the trunks start (carotid siphon), for inflow decay.
_TRUNK_START_MM = 30.0
# Vessels stay inside this ellipsoid (head mm): the brain, a little inside its surface.
_BRAIN_ELLIPSOID_CENTRE = np.array([0.0, -17.0, 6.0])
_BRAIN_ELLIPSOID_AXES = np.array([64.0, 84.0, 68.0])


@dataclass(frozen=True)
class _Vessel:
    """One vessel segment: a polyline in head mm, its radius, and path length from the root."""

    points: np.ndarray
    radius: float
    start_distance: float


def _main_arteries(rng: np.random.Generator) -> list[tuple[np.ndarray, float, int]]:
    """Circle-of-Willis roots and main trunks: (waypoints, radius mm, branches fanning from the end).

    Waypoints are template mm, sketched from the anatomy (ICAs and basilar rising from the
    skull base; MCA out along the Sylvian fissure; ACA up and back over the corpus callosum;
    PCA back to the occipital lobe), jittered per subject except where trunks join.
    """
    trunks: list[tuple[list[tuple[float, float, float]], float, int]] = [
        ([(0, -32, -50), (0, -26, -36), (0, -18, -22)], 1.6, 0),  # basilar
    ]
    for s in (-1.0, 1.0):
        ica_top = (13 * s, 2, -18)
        trunks += [
            ([(16 * s, 2, -50), (15 * s, 5, -32), ica_top], 2.0, 0),  # internal carotid
            ([ica_top, (28 * s, 4, -16), (40 * s, 2, -8), (46 * s, -8, 4)], 1.5, 3),  # middle cerebral
            # anterior cerebral
            ([ica_top, (5 * s, 14, -12), (3 * s, 27, 2), (3 * s, 30, 22), (3 * s, 12, 42), (3 * s, -18, 54)], 1.2, 2),
            ([(2 * s, -18, -22), (14 * s, -28, -15), (24 * s, -52, -6), (16 * s, -80, 4)], 1.2, 2),  # posterior
            ([ica_top, (9 * s, -9, -19), (2 * s, -18, -22)], 0.6, 0),  # posterior communicating
        ]
    trunks.append(([(-5, 14, -12), (5, 14, -12)], 0.6, 0))  # anterior communicating
    result = []
    for waypoints, radius, end_branches in trunks:
        points = np.asarray(waypoints, dtype=float)
        points[1:-1] += rng.normal(0.0, 1.5, points[1:-1].shape)
        result.append((points, radius, end_branches))
    return result


def _arterial_tree(bio_age: float, rng: np.random.Generator) -> list[_Vessel]:
    """Grow the subject's arterial tree: trunks, then recursive branching outward and upward.

    With age, small branches (radius < 1 mm) are pruned more often (rarefaction) and every
    segment meanders more (tortuosity).
    """
    a = max(_age_fraction(bio_age), 0.0)
    prune_probability = 0.05 + 0.6 * a
    meander = 0.03 + 0.12 * a
    vessels: list[_Vessel] = []

    def grow(start: np.ndarray, direction: np.ndarray, radius: float, length: float, distance: float) -> None:
        if radius < _MIN_RADIUS_MM or (radius < 1.0 and rng.random() < prune_probability):
            return
        end = _inside_brain(start + direction * length)
        points = _meander(start, end, meander, rng)
        vessels.append(_Vessel(points, radius, distance))
        travelled = distance + _polyline_length(points)
        child_radius = radius * _CHILD_RADIUS_RATIO
        for _ in range(2):
            child = _deviate(end - start, rng) + 0.5 * _outward(end)
            grow(end, _unit(child), child_radius, length * rng.uniform(0.65, 0.9), travelled)
        if rng.random() < 0.5:
            # A side branch off the middle of the segment: cortical arteries branch all along.
            middle = points[len(points) // 2]
            side = _deviate(end - start, rng) + _outward(middle)
            grow(middle, _unit(side), child_radius * _CHILD_RADIUS_RATIO, length * 0.6, travelled - length / 2)

    for waypoints, radius, end_branches in _main_arteries(rng):
        pieces = [_meander(p, q, meander, rng) for p, q in zip(waypoints[:-1], waypoints[1:], strict=True)]
        vessels.append(_Vessel(np.concatenate([piece[:-1] for piece in pieces] + [waypoints[-1:]]), radius, 0.0))
        if end_branches == 0:
            continue
        # Branches leave at every bend of the trunk and fan out from its end.
        distance = _TRUNK_START_MM
        origins = []
        for index, piece in enumerate(pieces, start=1):
            distance += _polyline_length(piece)
            origins += [(index, distance)] * (end_branches if index == len(pieces) else 1)
        for index, distance in origins:
            origin = waypoints[index]
            heading = _deviate(waypoints[index] - waypoints[index - 1], rng) + _outward(origin)
            grow(origin, _unit(heading), radius * _CHILD_RADIUS_RATIO, rng.uniform(14.0, 22.0), distance)
    return vessels


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-9)


def _outward(point: np.ndarray) -> np.ndarray:
    """Direction from the brain centre to ``point``, tilted upward: arteries climb the cortex."""
    return _unit(_unit(point - _BRAIN_ELLIPSOID_CENTRE) + np.array([0.0, 0.0, 0.2]))


def _deviate(direction: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Turn a direction by 25-55 degrees about a random perpendicular axis."""
    forward = _unit(direction)
    side = _unit(np.cross(forward, rng.normal(size=3)))
    angle = math.radians(rng.uniform(25.0, 55.0))
    return math.cos(angle) * forward + math.sin(angle) * side


def _inside_brain(point: np.ndarray) -> np.ndarray:
    """Pull a point back inside the brain ellipsoid if it has left it."""
    relative = (point - _BRAIN_ELLIPSOID_CENTRE) / _BRAIN_ELLIPSOID_AXES
    extent = float(np.linalg.norm(relative))
    if extent <= 1.0:
        return point
    return _BRAIN_ELLIPSOID_CENTRE + relative / extent * _BRAIN_ELLIPSOID_AXES


def _meander(start: np.ndarray, end: np.ndarray, amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """A polyline from start to end that wanders sideways by ``amplitude`` x its length."""
    chord = end - start
    length = float(np.linalg.norm(chord))
    n_pieces = max(2, math.ceil(length / 4.0))
    t = np.linspace(0.0, 1.0, n_pieces + 1)[:, None]
    side = _unit(np.cross(chord, rng.normal(size=3)))
    other = _unit(np.cross(chord, side))
    # Sine harmonics vanish at both ends, so segments still join their parents.
    harmonics = np.sin(np.pi * t * np.arange(1, 4)) / np.arange(1, 4)
    lateral = harmonics @ rng.normal(0.0, amplitude * length, (3, 2))
    return start + t * chord + lateral[:, :1] * side + lateral[:, 1:] * other


def _polyline_length(points: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(points, axis=0), axis=1).sum())


def _distal_decay_mm(bio_age: float) -> float:
    """Path length over which inflow signal falls by 1/e: shorter in older, slower flow."""
    return 320.0 - 190.0 * max(_age_fraction(bio_age), 0.0)


def vessel_tree(
    shape: tuple[int, int, int], affine: np.ndarray, bio_age: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Rasterize a random arterial tree on a voxel grid: (vessel mask, vessel signal in [0, 1]).

    ``affine`` maps the grid's voxel indices to head (template) mm; for a scan that is
    ``inv(head_to_scanner) @ scan_affine``. The tree's branching, pruning, tortuosity and distal
    signal depend on ``bio_age``; its randomness on ``rng`` only. Vessels thinner than a voxel
    are drawn one voxel wide with proportionally less signal (partial volume), and the mask is
    the voxels where the signal is at least 0.15, i.e. where a vessel is visible.
    """
    shape = tuple(int(n) for n in shape)
    affine = np.asarray(affine, dtype=float)
    vessels = _arterial_tree(bio_age, rng)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    step = 0.4 * float(spacing.min())
    positions, radii, distances = _sample_centrelines(vessels, step)
    drawn_radius = np.maximum(radii, 0.5 * float(spacing.max()))
    strength = np.exp(-distances / _distal_decay_mm(bio_age)) * np.minimum(1.0, radii / drawn_radius)
    signal = _rasterize(positions, drawn_radius, strength, shape, affine)
    return signal >= _VISIBLE_SIGNAL, signal


def _sample_centrelines(vessels: list[_Vessel], step: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points every ``step`` mm along all vessels, with their radius and distance from the root."""
    positions, radii, distances = [], [], []
    for vessel in vessels:
        travelled = vessel.start_distance
        for p, q in zip(vessel.points[:-1], vessel.points[1:], strict=True):
            length = float(np.linalg.norm(q - p))
            t = np.arange(0.0, length, step) / max(length, 1e-9)
            positions.append(p + t[:, None] * (q - p))
            distances.append(travelled + t * length)
            radii.append(np.full(len(t), vessel.radius))
            travelled += length
    return np.concatenate(positions), np.concatenate(radii), np.concatenate(distances)


def _rasterize(
    positions: np.ndarray, radius: np.ndarray, strength: np.ndarray, shape: tuple[int, int, int], affine: np.ndarray
) -> np.ndarray:
    """Paint balls of ``radius`` mm around centreline points; each voxel keeps its max strength."""
    to_voxel = np.linalg.inv(affine)
    continuous = positions @ to_voxel[:3, :3].T + to_voxel[:3, 3]
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    reach = int(math.ceil(float(radius.max()) / float(spacing.min())))
    inside = np.all((continuous >= -reach) & (continuous <= np.asarray(shape) - 1 + reach), axis=1)
    continuous, radius, strength = continuous[inside], radius[inside], strength[inside]
    span = np.arange(-reach, reach + 1)
    offsets = np.stack(np.meshgrid(span, span, span, indexing="ij"), axis=-1).reshape(-1, 3)
    signal = np.zeros(int(np.prod(shape)), dtype=np.float32)
    chunk = max(1, 4_000_000 // len(offsets))
    for start in range(0, len(continuous), chunk):
        points = continuous[start : start + chunk]
        voxels = np.round(points).astype(np.intp)[:, None, :] + offsets[None, :, :]
        distance = np.linalg.norm((voxels - points[:, None, :]) @ affine[:3, :3].T, axis=-1)
        hit = (distance <= radius[start : start + chunk, None]) & np.all(
            (voxels >= 0) & (voxels < np.asarray(shape)), axis=-1
        )
        flat = np.ravel_multi_index(tuple(voxels[hit].T), shape)
        values = np.broadcast_to(strength[start : start + chunk, None], hit.shape)[hit]
        np.maximum.at(signal, flat, values.astype(np.float32))
    return signal.reshape(shape)


# ---------------------------------------------------------------------------------------------
# Acquisition
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ScanSpec:
    """IXI acquisition geometry at scale 1: matrix, spacing (mm), axis codes, FOV centre."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    axcodes: tuple[str, str, str]
    centre_mm: tuple[float, float, float]  # scanner coordinates of the FOV centre


_SCANS = {
    # Sagittal T1 stored posterior-superior-right, like IXI: readers must reorient.
    "T1": _ScanSpec((256, 256, 150), (0.9375, 0.9375, 1.2), ("P", "S", "R"), (0.0, 0.0, -10.0)),
    "PD": _ScanSpec((256, 256, 130), (0.9375, 0.9375, 1.2), ("L", "A", "S"), (0.0, 0.0, 0.0)),
    # An 80 mm axial slab from the skull base up: the brain centre sits near its top, not middle.
    "MRA": _ScanSpec((512, 512, 100), (0.469, 0.469, 0.8), ("L", "A", "S"), (0.0, 0.0, -22.0)),
}
_AXIS_DIRECTIONS = {"R": (1, 0, 0), "L": (-1, 0, 0), "A": (0, 1, 0), "P": (0, -1, 0), "S": (0, 0, 1), "I": (0, 0, -1)}
_MAX_ROTATION_DEG = 5.0
_MAX_TRANSLATION_MM = 5.0


def _scan_grid(modality: str, scale: float) -> tuple[tuple[int, int, int], np.ndarray]:
    """Matrix size and voxel-to-scanner affine of a scan at ``scale``."""
    spec = _SCANS[modality]
    shape = tuple(max(8, round(n * scale)) for n in spec.shape)
    spacing = np.asarray(spec.spacing) / scale
    affine = np.eye(4)
    for axis, code in enumerate(spec.axcodes):
        affine[:3, axis] = np.asarray(_AXIS_DIRECTIONS[code]) * spacing[axis]
    affine[:3, 3] = np.asarray(spec.centre_mm) - affine[:3, :3] @ ((np.asarray(shape) - 1) / 2)
    return shape, affine


def _rotation(angles_deg: np.ndarray) -> np.ndarray:
    rx, ry, rz = np.radians(angles_deg)
    about_x = np.array([[1, 0, 0], [0, math.cos(rx), -math.sin(rx)], [0, math.sin(rx), math.cos(rx)]])
    about_y = np.array([[math.cos(ry), 0, math.sin(ry)], [0, 1, 0], [-math.sin(ry), 0, math.cos(ry)]])
    about_z = np.array([[math.cos(rz), -math.sin(rz), 0], [math.sin(rz), math.cos(rz), 0], [0, 0, 1]])
    return about_z @ about_y @ about_x


def _rigid(rotation: np.ndarray, pivot: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """4x4 rotation about ``pivot`` followed by ``translation``."""
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = pivot - rotation @ pivot + translation
    return matrix


def _head_to_scanner(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-scan head poses: a session pose (head tilt and table position) times scan motion."""
    centre = np.asarray(_BRAIN_CENTRE_MM)
    tilt = _rotation(np.array([rng.uniform(-8.0, 8.0), rng.uniform(-3.0, 3.0), rng.uniform(-3.0, 3.0)]))
    placement = np.array([rng.uniform(-5.0, 5.0), rng.uniform(-8.0, 8.0), rng.uniform(-8.0, 8.0)])
    session = _rigid(tilt, centre, placement - centre)
    poses = {}
    for modality in MODALITIES:
        angles = rng.uniform(-_MAX_ROTATION_DEG, _MAX_ROTATION_DEG, 3)
        shift = rng.uniform(-_MAX_TRANSLATION_MM, _MAX_TRANSLATION_MM, 3)
        motion = _rigid(_rotation(angles), placement, shift)
        poses[modality] = motion @ session
    return poses


def _bias_field(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """Smooth multiplicative field: exp of a random quadratic over the field of view."""
    axes = [np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape]
    grids = np.meshgrid(*axes, indexing="ij", sparse=True)
    terms = [*grids, grids[0] * grids[1], grids[0] * grids[2], grids[1] * grids[2], *(g * g for g in grids)]
    log_field = sum(rng.normal(0.0, _BIAS_STRENGTH) * term for term in terms)
    return np.exp(np.broadcast_to(log_field, shape)).astype(np.float32)


def _acquire(clean: np.ndarray, modality: str, site: str, rng: np.random.Generator) -> np.ndarray:
    """Bias field, Rician noise and site gain on a clean image, stored as int16 like IXI."""
    biased = clean * _bias_field(clean.shape, rng)
    real = biased + rng.normal(0.0, _NOISE_SIGMA, clean.shape).astype(np.float32)
    imaginary = rng.normal(0.0, _NOISE_SIGMA, clean.shape).astype(np.float32)
    magnitude = np.hypot(real, imaginary)
    counts = np.rint(magnitude * _FULL_SCALE[modality] * _SITE_GAIN[site])
    return np.clip(counts, 0, np.iinfo(np.int16).max).astype(np.int16)


def _scanner_image(data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    """NIfTI with qform and sform both in the scanner frame (code 1), as IXI headers are."""
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    return image


def synthesize_subject(row: Mapping, raw_dir: Path, truth_dir: Path, scale: float, seed: int) -> None:
    """Write one subject's raw NIfTIs under ``raw_dir`` and its truth JSON under ``truth_dir``.

    Deterministic from ``(seed, subject)`` and independent of every other subject, so subjects
    can be synthesized by parallel jobs in any order.
    """
    subject = str(row["subject"])
    bio_age = float(row["bio_age"])
    site = str(row["site"])
    anatomy = _anatomy(_working_step(scale))
    effects = _age_effects(bio_age)
    poses = _head_to_scanner(_rng(seed, "motion", subject))
    for modality, relative_path in subject_files(row).items():
        shape, affine = _scan_grid(modality, scale)
        voxel_to_head = np.linalg.inv(poses[modality]) @ affine
        clean = _render_tissue(shape, voxel_to_head, effects, anatomy, _CONTRAST[modality])
        if modality == "MRA":
            _, vessels = vessel_tree(shape, voxel_to_head, bio_age, _rng(seed, "vessels", subject))
            clean = clean * (1.0 - vessels) + vessels
        data = _acquire(clean, modality, site, _rng(seed, "acquisition", modality, subject))
        save_image(_scanner_image(data, affine), Path(raw_dir) / relative_path)
    truth = {
        "subject": subject,
        "age": float(row["age"]),
        "bio_age": bio_age,
        "sex": int(row["sex"]),
        "site": site,
        "head_to_scanner": {modality: poses[modality].tolist() for modality in MODALITIES},
    }
    write_json(truth, Path(truth_dir) / f"{subject}.json")


def assemble_dataset(subject_dirs: Sequence[Path], raw_dir: Path) -> int:
    """Lay the per-subject outputs of :func:`synthesize_subject` out as one IXI-like folder.

    Files are hard-linked (copied where links are impossible) into a temporary folder that is
    renamed into place, and made read-only like extracted raw data: the workflow never writes
    into its raw-data folder. Returns the number of images.
    """
    raw_dir = Path(raw_dir)
    staging = raw_dir.with_name(f".{raw_dir.name}.tmp")
    if staging.exists():
        shutil.rmtree(staging)
    count = 0
    for subject_dir in subject_dirs:
        for image in sorted(Path(subject_dir).glob("IXI-*/*.nii.gz")):
            target = staging / image.parent.name / image.name
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(image, target)
            except OSError:
                shutil.copyfile(image, target)
            target.chmod(0o444)
            count += 1
    if raw_dir.exists():
        shutil.rmtree(raw_dir)
    staging.rename(raw_dir)
    return count
