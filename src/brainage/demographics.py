"""The IXI demographics spreadsheet: read it faithfully, then resolve it to one row per subject.

The sheet has quirks that silently corrupt a cohort if read naively: numeric columns use 0 for
"unknown", missing ages and study dates are empty *text* cells, a few DOBs are date cells while
the rest are text, and 26 ids appear twice (mostly a complete row plus a zero-filled copy; two
ids carry two different ages). :func:`read_demographics` only reads and normalizes; every
decision about which row counts is made by :func:`resolve_subjects`, by the rules in its
docstring, and every subject it drops comes back with a reason.
"""

from __future__ import annotations

import datetime as dt
import io
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# Duplicated rows whose ages differ by more than this (in years, about four days) disagree
# about who the subject is; closer ages are the same age written with different rounding.
AGE_TOLERANCE_YEARS = 0.01
# Ages outside this range (years, inclusive) are typing errors, not people; the workflow takes
# its range from the config key dataset.age_range.
AGE_RANGE = (0.0, 120.0)

REQUIRED_COLUMNS = ("ixi_id", "age")

# Column names after normalization that are not simply the lower-cased header.
_RENAMES = {"sex_id": "sex"}

# Columns holding numbers. In all but the availability flag the sheet writes 0 for "unknown":
# nobody is 0 cm tall or 0 years old, and the coded columns start at 1.
_NUMERIC_COLUMNS = (
    "ixi_id",
    "sex",
    "height",
    "weight",
    "ethnic_id",
    "marital_id",
    "occupation_id",
    "qualification_id",
    "date_available",
    "age",
)
_ZERO_IS_MISSING = tuple(c for c in _NUMERIC_COLUMNS if c not in ("ixi_id", "date_available"))
_DATE_COLUMNS = ("dob", "study_date")
# An age cell that is not a number, as written, beside the age column (which holds NaN there):
# such a cell excludes its subject (see resolve_subjects) instead of stopping the whole sheet.
AGE_TEXT = "age_text"
# The sex labels of the inventory and manifest, whatever the source writes.
MALE = "M"
FEMALE = "F"
_SEX_CODES = {1: MALE, 2: FEMALE}
# Why a subject without a chronological age is excluded (brain age needs it), for every source.
NO_AGE = "no age in demographics sheet"


class DemographicsError(ValueError):
    """The demographics file cannot be read as an IXI sheet; the message names file and problem."""


def subject_id(ixi_id: int) -> str:
    """The subject label used everywhere else, as in the IXI image file names: 2 -> "IXI002"."""
    return f"IXI{int(ixi_id):03d}"


def implausible_age(age: str, age_range: tuple[float, float] = AGE_RANGE) -> str:
    """Why an age, as written (text that is not a number, or a number outside ``age_range``),
    excludes its subject: the sheet, or whichever table gave it, is wrong about this person."""
    low, high = age_range
    return f"age {age} is not a plausible age (allowed {low:g}-{high:g})"


def read_demographics(path: Path, sheet: str = "Table") -> pd.DataFrame:
    """Read the demographics sheet (.xls, .xlsx or .csv) into one normalized row per sheet row.

    Column names become snake case (``IXI_ID`` -> ``ixi_id``, ``SEX_ID (1=m, 2=f)`` -> ``sex``);
    0 and empty cells in numeric columns become NaN; ``sex`` becomes "M"/"F"; dates become ISO
    text. A ``row`` column keeps the 1-based sheet row (header = row 1) so later messages can
    point at the rows they are about. Duplicated ids are kept: see :func:`resolve_subjects`.

    An age cell that is not a number (text, a TRUE/FALSE cell) becomes NaN with the cell's text
    in column ``age_text``; in any other numeric column it is an error naming row and value.
    """
    path = Path(path)
    if not path.exists():
        raise DemographicsError(f"{path}: demographics file does not exist")
    header, rows = _read_cells(path, sheet)
    names = [_normalize_name(name) for name in header]
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise DemographicsError(
            f"{path}: required column(s) {', '.join(c.upper() for c in missing)} not found; "
            f"columns found: {', '.join(map(str, header))}"
        )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DemographicsError(f"{path}: columns that mean the same thing appear twice: {repeated}")
    # Header is sheet row 1, so data row i (0-based) is sheet row i + 2; wholly blank rows
    # (trailing formatting in spreadsheets) are not records.
    numbered = [(i + 2, r) for i, r in enumerate(rows) if not all(_is_blank(v) for v in r)]
    if not numbered:
        raise DemographicsError(f"{path}: no data rows below the header")
    table = pd.DataFrame([r for _, r in numbered], columns=names, dtype=object)
    table.insert(0, "row", [n for n, _ in numbered])
    table[AGE_TEXT] = [_not_a_number(v) for v in table["age"]]
    for column in names:
        if column in _NUMERIC_COLUMNS:
            table[column] = _numeric_column(table, column, path)
        elif column in _DATE_COLUMNS:
            table[column] = table[column].map(_date_text)
    _check_ids(table, path)
    table["ixi_id"] = table["ixi_id"].astype(int)
    for column in _ZERO_IS_MISSING:
        if column in table:
            table[column] = table[column].mask(table[column] == 0)
    if "sex" in table:
        table["sex"] = _sex_labels(table, path)
    return table


def resolve_subjects(
    rows: pd.DataFrame, age_range: tuple[float, float] = AGE_RANGE
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reduce the sheet to one row per IXI id; return (subjects, exclusions).

    Rules, applied per id:

    1. Rows that are identical in every field count once.
    2. If a row's age is not a number or lies outside ``age_range`` (inclusive), the sheet is
       wrong about this person: the id is excluded.
    3. If the rows' ages differ by more than ``AGE_TOLERANCE_YEARS``, or their known sexes
       differ, the sheet contradicts itself about this person: the id is excluded.
    4. If no row has an age, the id is excluded (brain age needs the chronological age).
    5. Otherwise the row kept is the one with an age and the most known fields, so a
       zero-filled or emptier copy yields to the complete row; ties go to the earlier row.

    ``subjects`` has columns subject ("IXI002"), ixi_id, sex, age, then the other demographics,
    sorted by subject. ``exclusions`` has columns subject, reason: one row per excluded id.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in rows]
    if missing:
        raise DemographicsError(f"demographics table lacks column(s) {missing}; has {list(rows.columns)}")
    unique = rows.drop_duplicates(subset=[c for c in rows.columns if c != "row"])
    fields = [c for c in rows.columns if c not in ("row", AGE_TEXT)]
    kept: list[pd.Series] = []
    excluded: list[dict[str, str]] = []
    for ixi_id, group in unique.groupby("ixi_id", sort=True):
        problems = _implausible_ages(group, age_range) or _conflicts(group)
        if not problems and group["age"].isna().all():
            problems = [NO_AGE]
        if problems:
            excluded.append({"subject": subject_id(ixi_id), "reason": "; ".join(problems)})
        else:
            kept.append(_most_complete(group, fields))
    others = [c for c in fields if c not in ("ixi_id", "sex", "age")]
    columns = ["subject", "ixi_id", "sex", "age", *others]
    subjects = pd.DataFrame(kept, columns=fields)
    subjects.insert(0, "subject", [subject_id(i) for i in subjects["ixi_id"]])
    if "sex" not in subjects:
        subjects["sex"] = np.nan
    subjects = subjects[columns].sort_values("subject").reset_index(drop=True)
    exclusions = pd.DataFrame(excluded, columns=["subject", "reason"])
    return subjects, exclusions.sort_values("subject").reset_index(drop=True)


def _read_cells(path: Path, sheet: str) -> tuple[list[Any], list[list[Any]]]:
    """The header and data rows as Python values, None for empty cells, by file type."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path)
    if suffix == ".xls":
        return _read_xls(path, sheet)
    if suffix == ".xlsx":
        return _read_xlsx(path, sheet)
    raise DemographicsError(f"{path}: unsupported demographics file type {suffix!r}; use .xls, .xlsx or .csv")


def _read_csv(path: Path) -> tuple[list[Any], list[list[Any]]]:
    try:
        table = pd.read_csv(io.StringIO(_csv_text(path)), dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise DemographicsError(f"{path}: file is empty: no header row") from None
    except pd.errors.ParserError as error:
        raise DemographicsError(f"{path}: cannot be read as .csv ({error})") from None
    return list(table.columns), [[v if v.strip() else None for v in r] for r in table.itertuples(index=False)]


def _csv_text(path: Path) -> str:
    """The file decoded as UTF-8 (with or without Excel's byte-order mark), else as Windows-1252.

    Excel on Windows saves "CSV" in Windows-1252, whose letters are Latin-1's, so such sheets
    read correctly instead of being refused; bytes that are neither are not a text sheet.
    """
    data = path.read_bytes()
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            pass
    raise DemographicsError(f"{path}: not UTF-8 or Windows-1252 (Latin-1) text; save the sheet as CSV UTF-8")


def _read_xls(path: Path, sheet: str) -> tuple[list[Any], list[list[Any]]]:
    # xlrd directly rather than through pandas: the cell types tell date cells (DOB in a few
    # rows) from numbers, and pandas' xlrd engine is deprecated.
    import xlrd

    try:
        book = xlrd.open_workbook(path)
    except Exception as error:  # xlrd raises several types for corrupt or non-.xls files
        raise DemographicsError(f"{path}: cannot be read as .xls ({type(error).__name__}: {error})") from error
    if sheet not in book.sheet_names():
        raise DemographicsError(f"{path}: no sheet {sheet!r}; sheets: {', '.join(book.sheet_names())}")
    table = book.sheet_by_name(sheet)
    if table.nrows == 0:
        raise DemographicsError(f"{path}: sheet {sheet!r} is empty")

    def value(cell: Any) -> Any:
        if cell.ctype == xlrd.XL_CELL_DATE:
            return xlrd.xldate_as_datetime(cell.value, book.datemode)
        if cell.ctype == xlrd.XL_CELL_BOOLEAN:
            return bool(cell.value)
        if cell.ctype in (xlrd.XL_CELL_EMPTY, xlrd.XL_CELL_BLANK, xlrd.XL_CELL_ERROR):
            return None
        return cell.value

    rows = [[value(c) for c in table.row(r)] for r in range(table.nrows)]
    return rows[0], rows[1:]


def _read_xlsx(path: Path, sheet: str) -> tuple[list[Any], list[list[Any]]]:
    import openpyxl

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as error:  # openpyxl raises several types for corrupt or non-.xlsx files
        raise DemographicsError(f"{path}: cannot be read as .xlsx ({type(error).__name__}: {error})") from error
    try:
        if sheet not in book.sheetnames:
            raise DemographicsError(f"{path}: no sheet {sheet!r}; sheets: {', '.join(book.sheetnames)}")
        rows = [list(r) for r in book[sheet].iter_rows(values_only=True)]
    finally:
        book.close()
    if not rows:
        raise DemographicsError(f"{path}: sheet {sheet!r} is empty")
    return rows[0], rows[1:]


def _normalize_name(name: Any) -> str:
    """``SEX_ID (1=m, 2=f)`` -> ``sex``: drop parenthesized notes, snake case, then rename."""
    text = re.sub(r"\(.*?\)", "", str(name)).strip().lower()
    text = re.sub(r"[^0-9a-z]+", "_", text).strip("_")
    return _RENAMES.get(text, text)


def _is_blank(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _not_a_number(value: Any) -> Any:
    """The cell as written when it holds something other than a number, else NaN.

    TRUE/FALSE cells are written as Excel shows them, so the three file types read alike.
    """
    if isinstance(value, bool):
        return str(value).upper()
    if _is_blank(value) or isinstance(value, int | float):
        return np.nan
    try:
        float(value)
    except (TypeError, ValueError):
        return str(value).strip()
    return np.nan


def _numeric_column(table: pd.DataFrame, column: str, path: Path) -> pd.Series:
    """Parse one numeric column; a cell that is not a number is an error naming row and value.

    Ages are the exception: such an age is NaN here and excludes its subject later (``age_text``).
    """

    def parse(value: Any, row: int) -> float:
        text = _not_a_number(value)
        if isinstance(text, str):
            if column == "age":
                return np.nan
            raise DemographicsError(f"{path}: row {row}, column {column}: {text!r} is not a number")
        return np.nan if _is_blank(value) else float(value)

    return pd.Series(
        [parse(v, r) for v, r in zip(table[column], table["row"], strict=True)], index=table.index, dtype=float
    )


def _check_ids(table: pd.DataFrame, path: Path) -> None:
    ids = table["ixi_id"]
    bad = table[ids.isna() | (ids <= 0) | (ids % 1 != 0)]
    if len(bad):
        shown = ", ".join(f"row {r}: {v!r}" for r, v in zip(bad["row"][:5], bad["ixi_id"][:5], strict=True))
        raise DemographicsError(f"{path}: {len(bad)} row(s) without a valid IXI_ID ({shown})")


def _sex_labels(table: pd.DataFrame, path: Path) -> pd.Series:
    unknown = table[table["sex"].notna() & ~table["sex"].isin(list(_SEX_CODES))]
    if len(unknown):
        row, code = unknown["row"].iloc[0], unknown["sex"].iloc[0]
        raise DemographicsError(f"{path}: row {row}: sex code {code:g} is not 1 (m) or 2 (f)")
    return table["sex"].map(_SEX_CODES).astype(object)


def _date_text(value: Any) -> Any:
    """Dates as ISO text whether the cell was a date or text; blanks become NaN."""
    if _is_blank(value):
        return np.nan
    if isinstance(value, dt.datetime | dt.date):
        return value.strftime("%Y-%m-%d")
    return str(value).strip()


def _implausible_ages(group: pd.DataFrame, age_range: tuple[float, float]) -> list[str]:
    """One reason per age of this id that is not a number or lies outside ``age_range``."""
    low, high = age_range
    texts = group[AGE_TEXT].dropna().tolist() if AGE_TEXT in group else []
    outside = [f"{age:g}" for age in group["age"].dropna() if not low <= age <= high]
    return [implausible_age(text, age_range) for text in dict.fromkeys(texts + outside)]


def _conflicts(group: pd.DataFrame) -> list[str]:
    """How the rows of one id contradict each other about age or sex (empty if they agree)."""
    problems = []
    ages = sorted(group["age"].dropna().unique())
    if ages and ages[-1] - ages[0] > AGE_TOLERANCE_YEARS:
        problems.append(
            f"conflicting ages in demographics sheet: {', '.join(f'{a:.2f}' for a in ages)} (rows {_rows(group)})"
        )
    sexes = sorted(group["sex"].dropna().unique()) if "sex" in group else []
    if len(sexes) > 1:
        problems.append(f"conflicting sex in demographics sheet: {', '.join(sexes)} (rows {_rows(group)})")
    return problems


def _rows(group: pd.DataFrame) -> str:
    return ", ".join(str(r) for r in group["row"]) if "row" in group else "?"


def _most_complete(group: pd.DataFrame, fields: Sequence[str]) -> pd.Series:
    """The row with an age and the most known fields; the earliest row wins ties."""
    score = group["age"].notna().astype(int) * len(fields) + group[list(fields)].notna().sum(axis=1)
    return group.loc[score.idxmax(), list(fields)]
