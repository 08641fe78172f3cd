"""The ``IXI.xls`` demographics sheet, written with the layout and the quirks of the real one."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainage.io import atomic_path
from brainage.synth.cohort import DAYS_PER_YEAR
from brainage.synth.seeding import random_stream

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

    rng = random_stream(seed, "demographics")
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
    age_days = round(record.age * DAYS_PER_YEAR)
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
        "AGE": age_days / DAYS_PER_YEAR,
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
            "AGE": (study_day - other_birth) / DAYS_PER_YEAR,
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
