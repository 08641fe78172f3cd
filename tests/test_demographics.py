"""Reading and resolving the IXI demographics sheet, on small sheets that copy its quirks."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import pytest
import xlwt

from brainage.demographics import DemographicsError, read_demographics, resolve_subjects
from brainage.inventory import build_inventory
from conftest import IXI_SHEET_HEADER

REAL_SHEET = Path("/work/shared/data/ixi/IXI.xls")

DATE = dt.datetime(2006, 8, 25)

# Rows as in the real sheet: "" is an empty text cell, a datetime becomes a date cell.
ROWS = [
    [1, 1, 170, 80, 2, 3, 5, 2, "1968-02-22", 0, "", ""],  # no age
    [2, 2, 164, 58, 1, 4, 1, 5, "1970-01-30", 1, DATE, 35.8],
    [12, 1, 175, 70, 1, 2, 1, 5, dt.datetime(1966, 8, 20), 1, DATE, 38.78],  # DOB as a date cell
    [237, 2, 167, 0, 1, 5, 5, 5, "1928-06-11", 1, DATE, 78.2],  # complete row (weight unknown)
    [237, 2, 0, 0, 0, 0, 0, 0, "1928-06-11", 1, DATE, 78.2],  # zero-filled copy
    [447, 2, 153, 57, 1, 5, 5, 5, "1933-09-04", 1, DATE, 72.8],
    [447, 2, 153, 57, 1, 5, 5, 5, "1933-09-04", 1, DATE, 72.8],  # identical copy
    [219, 2, 170, 104, 1, 2, 1, 4, "1953-02-08", 1, DATE, 53.08],
    [219, 2, 164, 73, 1, 4, 1, 5, "1948-02-12", 1, DATE, 58.07],  # conflicting age
    [392, 2, 163, 76, 0, 0, 0, 0, "1944-03-21", 1, DATE, 62.455],  # emptier row first
    [392, 2, 165, 61, 1, 2, 5, 4, "1944-03-21", 1, DATE, 62.456],  # same age within tolerance
]


def write_xls(path: Path, rows: list[list] = ROWS, header: list[str] = IXI_SHEET_HEADER, sheet: str = "Table") -> Path:
    book = xlwt.Workbook()
    table = book.add_sheet(sheet)
    dates = xlwt.easyxf(num_format_str="YYYY-MM-DD")
    for c, name in enumerate(header):
        table.write(0, c, name)
    for r, row in enumerate(rows, start=1):
        for c, value in enumerate(row):
            if isinstance(value, dt.datetime):
                table.write(r, c, value, dates)
            else:
                table.write(r, c, value)
    book.add_sheet("Ethnicity")
    book.save(str(path))
    return path


def test_reads_xls_quirks(tmp_path: Path) -> None:
    rows = read_demographics(write_xls(tmp_path / "ixi.xls"))
    assert list(rows.columns) == [
        "row",
        "ixi_id",
        "sex",
        "height",
        "weight",
        "ethnic_id",
        "marital_id",
        "occupation_id",
        "qualification_id",
        "dob",
        "date_available",
        "study_date",
        "age",
        "age_text",
    ]
    assert rows["age_text"].isna().all()
    assert len(rows) == len(ROWS)
    assert rows["row"].tolist() == list(range(2, len(ROWS) + 2))
    first = rows.iloc[0]
    assert first["ixi_id"] == 1 and first["sex"] == "M" and np.isnan(first["age"])
    assert pd.isna(first["study_date"]) and first["date_available"] == 0
    assert rows.loc[2, "dob"] == "1966-08-20"  # date cell and text read alike
    assert rows.loc[1, "study_date"] == "2006-08-25"
    zero_filled = rows.iloc[4]
    assert zero_filled[["height", "weight", "ethnic_id", "qualification_id"]].isna().all()
    assert rows.loc[3, "height"] == 167 and np.isnan(rows.loc[3, "weight"])


def test_reads_xlsx_and_csv_alike(tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    table = book.active
    table.title = "Table"
    for row in [IXI_SHEET_HEADER, *ROWS]:
        table.append([None if v == "" else v for v in row])
    book.save(tmp_path / "ixi.xlsx")
    csv = pd.DataFrame(ROWS, columns=IXI_SHEET_HEADER)
    csv.to_csv(tmp_path / "ixi.csv", index=False, date_format="%Y-%m-%d")

    from_xls = read_demographics(write_xls(tmp_path / "ixi.xls"))
    for other in (read_demographics(tmp_path / "ixi.xlsx"), read_demographics(tmp_path / "ixi.csv")):
        pd.testing.assert_frame_equal(other, from_xls, check_dtype=False)


def test_missing_sheet_names_the_sheets(tmp_path: Path) -> None:
    path = write_xls(tmp_path / "ixi.xls", sheet="Data")
    with pytest.raises(DemographicsError, match=r"ixi\.xls: no sheet 'Table'; sheets: Data, Ethnicity"):
        read_demographics(path)


def test_missing_required_column_lists_columns(tmp_path: Path) -> None:
    header = [h for h in IXI_SHEET_HEADER if h != "AGE"]
    path = write_xls(tmp_path / "ixi.xls", rows=[r[:-1] for r in ROWS], header=header)
    expected = r"ixi\.xls: required column\(s\) AGE not found; columns found: IXI_ID, SEX"
    with pytest.raises(DemographicsError, match=expected):
        read_demographics(path)


def write_sheet(path: Path, header: list[str], rows: list[list]) -> Path:
    """Write ``rows`` as .xls, .xlsx or .csv by suffix; booleans become TRUE/FALSE text in CSV, as Excel writes them."""
    if path.suffix == ".xls":
        return write_xls(path, rows=rows, header=header)
    if path.suffix == ".xlsx":
        book = openpyxl.Workbook()
        book.active.title = "Table"
        for row in [header, *rows]:
            book.active.append(row)
        book.save(path)
        return path
    lines = [header, *[[str(v).upper() if isinstance(v, bool) else str(v) for v in row] for row in rows]]
    path.write_text("".join(",".join(map(str, line)) + "\n" for line in lines))
    return path


def test_text_in_numeric_column_names_row(tmp_path: Path) -> None:
    rows = [r.copy() for r in ROWS]
    rows[1][2] = "tall"
    with pytest.raises(DemographicsError, match=r"row 3, column height: 'tall' is not a number"):
        read_demographics(write_xls(tmp_path / "ixi.xls", rows=rows))


@pytest.mark.parametrize("suffix", [".xls", ".xlsx", ".csv"])
def test_boolean_in_numeric_column_is_not_a_number(tmp_path: Path, suffix: str) -> None:
    path = write_sheet(tmp_path / f"ixi{suffix}", ["IXI_ID", "HEIGHT", "AGE"], [[2, 170, 40], [3, True, 50]])
    with pytest.raises(DemographicsError, match=r"row 3, column height: 'TRUE' is not a number"):
        read_demographics(path)


# (IXI_ID, AGE cell, reason); xlsx cannot hold infinity.
IMPLAUSIBLE_AGES = [
    (3, 1e308, "age 1e+308 is not a plausible age (allowed 0-120)"),
    (4, -5, "age -5 is not a plausible age (allowed 0-120)"),
    (5, 200, "age 200 is not a plausible age (allowed 0-120)"),
    (6, True, "age TRUE is not a plausible age (allowed 0-120)"),
    (7, "thirty", "age thirty is not a plausible age (allowed 0-120)"),
]
INFINITE_AGE = (8, float("inf"), "age inf is not a plausible age (allowed 0-120)")


@pytest.mark.parametrize("suffix", [".xls", ".xlsx", ".csv"])
def test_implausible_or_non_numeric_age_excludes_the_subject(tmp_path: Path, suffix: str) -> None:
    cases = IMPLAUSIBLE_AGES + ([INFINITE_AGE] if suffix != ".xlsx" else [])
    rows = [[2, 40.5], [9, 120], *[[ixi_id, age] for ixi_id, age, _ in cases]]
    path = write_sheet(tmp_path / f"ixi{suffix}", ["IXI_ID", "AGE"], rows)
    subjects, exclusions = resolve_subjects(read_demographics(path))
    assert subjects["subject"].tolist() == ["IXI002", "IXI009"]
    assert subjects["age"].tolist() == [40.5, 120]
    assert "age_text" not in subjects
    assert dict(zip(exclusions["subject"], exclusions["reason"], strict=True)) == {
        f"IXI{ixi_id:03d}": reason for ixi_id, _, reason in cases
    }


def test_age_range_comes_from_the_caller(tmp_path: Path) -> None:
    path = write_sheet(tmp_path / "ixi.csv", ["IXI_ID", "AGE"], [[2, 17.9], [3, 18], [4, 90.5]])
    subjects, exclusions = resolve_subjects(read_demographics(path), age_range=(18, 90))
    assert subjects["subject"].tolist() == ["IXI003"]
    assert exclusions["reason"].tolist() == [
        "age 17.9 is not a plausible age (allowed 18-90)",
        "age 90.5 is not a plausible age (allowed 18-90)",
    ]


def test_implausible_age_in_a_duplicated_row_excludes_the_id(tmp_path: Path) -> None:
    path = write_sheet(tmp_path / "ixi.csv", ["IXI_ID", "AGE"], [[2, 40], [2, 400]])
    subjects, exclusions = resolve_subjects(read_demographics(path))
    assert subjects.empty
    assert exclusions["reason"].tolist() == ["age 400 is not a plausible age (allowed 0-120)"]


@pytest.mark.parametrize("content", [b"", b"\n\n", b"IXI_ID,AGE\n"], ids=["zero-bytes", "blank-lines", "header-only"])
def test_empty_csv_names_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "ixi.csv"
    path.write_bytes(content)
    with pytest.raises(DemographicsError, match=r"ixi\.csv: (file is empty|no data rows below the header)"):
        read_demographics(path)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "latin-1", "cp1252"])
def test_csv_from_excel_in_any_usual_encoding_reads_alike(tmp_path: Path, encoding: str) -> None:
    note = "Müller, Ørsted" + (" €" if encoding != "latin-1" else "")
    path = tmp_path / "ixi.csv"
    path.write_bytes(f'IXI_ID,AGE,NOTE\n2,40.5,"{note}"\n'.encode(encoding))
    rows = read_demographics(path)
    assert rows["ixi_id"].tolist() == [2] and rows["age"].tolist() == [40.5]
    assert rows["note"].tolist() == [note]


def test_csv_that_is_not_text_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "ixi.csv"
    path.write_bytes(b"IXI_ID,AGE\n2,\x81\xfe\x8d\n")
    with pytest.raises(DemographicsError, match=r"ixi\.csv: not UTF-8 or Windows-1252 \(Latin-1\) text"):
        read_demographics(path)


def test_resolve_rules(tmp_path: Path) -> None:
    subjects, exclusions = resolve_subjects(read_demographics(write_xls(tmp_path / "ixi.xls")))
    assert subjects["subject"].tolist() == ["IXI002", "IXI012", "IXI237", "IXI392", "IXI447"]
    assert list(subjects.columns[:4]) == ["subject", "ixi_id", "sex", "age"]
    assert "row" not in subjects
    by_id = subjects.set_index("subject")
    assert by_id.loc["IXI237", "height"] == 167  # complete row wins over its zero-filled copy
    assert by_id.loc["IXI392", "ethnic_id"] == 1  # fuller row wins though it comes second
    assert by_id.loc["IXI392", "age"] == pytest.approx(62.456)
    reasons = dict(zip(exclusions["subject"], exclusions["reason"], strict=True))
    assert reasons == {
        "IXI001": "no age in demographics sheet",
        "IXI219": "conflicting ages in demographics sheet: 53.08, 58.07 (rows 9, 10)",
    }


def test_conflicting_sex_excludes() -> None:
    rows = pd.DataFrame(
        {"row": [2, 3], "ixi_id": [5, 5], "sex": ["F", "M"], "age": [40.0, 40.0], "height": [160.0, np.nan]}
    )
    subjects, exclusions = resolve_subjects(rows)
    assert subjects.empty
    assert exclusions["reason"].tolist() == ["conflicting sex in demographics sheet: F, M (rows 2, 3)"]


@pytest.mark.skipif(not REAL_SHEET.exists(), reason="real IXI sheet not present")
def test_real_sheet() -> None:
    rows = read_demographics(REAL_SHEET)
    assert len(rows) == 619
    assert rows["ixi_id"].nunique() == 593
    assert rows["ixi_id"].duplicated().sum() == 26
    assert rows["age"].notna().sum() == 590
    subjects, exclusions = resolve_subjects(rows)
    conflicting = exclusions[exclusions["reason"].str.startswith("conflicting ages")]
    assert set(conflicting["subject"]) == {"IXI219", "IXI328"}
    no_age = exclusions[exclusions["reason"] == "no age in demographics sheet"]
    print(
        f"\nreal sheet: {len(subjects)} usable subjects with age; excluded: "
        f"{len(no_age)} no age, {len(conflicting)} conflicting ages"
    )
    assert len(subjects) == 563 and len(no_age) == 28 and len(exclusions) == 30
    assert subjects["age"].notna().all() and subjects["subject"].is_unique
    assert set(subjects["sex"]) == {"F", "M"}


def test_sheet_without_data_rows(tmp_path: Path) -> None:
    path = tmp_path / "ixi.csv"
    path.write_text("IXI_ID,AGE\n,\n")
    with pytest.raises(DemographicsError, match=r"ixi\.csv: no data rows below the header"):
        read_demographics(path)


def test_inventory_excludes_by_the_given_age_range(tmp_path: Path) -> None:
    sheet = write_sheet(tmp_path / "ixi.csv", ["IXI_ID", "AGE"], [[2, 40], [3, 95]])
    (tmp_path / "raw").mkdir()
    _, exclusions = build_inventory(tmp_path / "raw", sheet, ["T1"], age_range=(18, 90))
    reasons = dict(zip(exclusions["subject"], exclusions["reason"], strict=True))
    assert reasons["IXI003"] == "age 95 is not a plausible age (allowed 18-90); no images"
