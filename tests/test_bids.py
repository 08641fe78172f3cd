"""A BIDS dataset as the raw source: its files, its participants.tsv, and the inventory built from them."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest

from brainage import bids, inventory
from brainage.bids import BidsError, build_bids_inventory, per_session, read_participants, scan_bids
from brainage.demographics import NO_AGE, implausible_age
from brainage.inventory import FILE_COLUMNS, INVENTORY_COLUMNS, NO_IMAGES, NOT_IN_SHEET
from brainage.paths import BIDS_SUBJECT
from brainage.vocabulary import RAW_SCANS
from test_inventory import write_image

DESCRIPTION = {"Name": "brain age test", "BIDSVersion": "1.9.0"}
ALL_SUFFIXES = ("T1w", "PDw", "angio")


def anat(participant: str, suffix: str, session: str | None = None, entities: str = "") -> str:
    """The path of an anat image relative to the dataset root, as BIDS names it."""
    prefix = f"sub-{participant}" + (f"_ses-{session}" if session else "")
    folder = f"sub-{participant}" + (f"/ses-{session}" if session else "")
    return f"{folder}/anat/{prefix}{entities}_{suffix}.nii.gz"


def write_dataset(
    root: Path, images: list[str], participants: list[str] | None, description: dict | None = DESCRIPTION
) -> Path:
    """A BIDS dataset: ``images`` (paths under root), participants.tsv lines (header first)."""
    root.mkdir(parents=True, exist_ok=True)
    if description is not None:
        (root / "dataset_description.json").write_text(json.dumps(description))
    if participants is not None:
        (root / "participants.tsv").write_text("\n".join(participants) + "\n")
    for image in images:
        write_image(root / image)
    return root


def three_subjects(root: Path) -> Path:
    images = [anat(p, suffix) for p in ("01", "02", "03") for suffix in ALL_SUFFIXES]
    rows = ["participant_id\tage\tsex", "sub-01\t30.5\tM", "sub-02\t41\tfemale", "sub-03\t52\tF"]
    return write_dataset(root, images, rows)


def test_every_raw_scan_has_a_bids_suffix() -> None:
    assert tuple(bids.BIDS_SUFFIXES) == RAW_SCANS


def test_subject_ids_and_their_pattern() -> None:
    assert bids.subject_id("01") == "sub-01" and bids.subject_id("01", "pre") == "sub-01_ses-pre"
    for subject in ("sub-01", "sub-01_ses-pre", "sub-ABC9_ses-2"):
        assert re.fullmatch(BIDS_SUBJECT, subject)
        assert bids.participant_of(subject) == subject.partition("_ses-")[0]
    for other in ("IXI002", "sub-", "sub-01_ses-", "sub-0_1", "sub-01_run-1"):
        assert not re.fullmatch(BIDS_SUBJECT, other)


def test_a_normal_dataset_is_included_with_its_paths_ages_and_sexes(tmp_path: Path) -> None:
    root = three_subjects(tmp_path / "ds")
    # Not the study's images: another datatype, a sidecar, a name the validator refuses, derivatives.
    write_image(root / "sub-01" / "func" / "sub-01_task-rest_bold.nii.gz")
    (root / "sub-01" / "anat" / "sub-01_T1w.json").write_text("{}")
    write_image(root / "sub-01" / "anat" / "sub-01_T1.nii.gz")
    write_image(root / "derivatives" / "prep" / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    before = sorted(root.rglob("*"))

    files = scan_bids(root)
    assert list(files.columns) == FILE_COLUMNS
    subjects, exclusions = build_bids_inventory(root, ["T1", "MRA"], threads=2)

    assert list(subjects.columns) == INVENTORY_COLUMNS and exclusions.empty
    assert subjects["subject"].tolist() == ["sub-01", "sub-02", "sub-03"]
    assert subjects["included"].all() and (subjects["reason"] == "").all()
    assert subjects["age"].tolist() == [30.5, 41.0, 52.0]
    assert subjects["sex"].tolist() == ["M", "F", "F"]
    assert (subjects["site"] == "").all()
    for row in subjects.itertuples(index=False):
        for scan, suffix in bids.BIDS_SUFFIXES.items():
            assert getattr(row, f"path_{scan}") == str(root / anat(row.subject[4:], suffix))
    assert sorted(root.rglob("*")) == before, "pybids wrote into the dataset"


def test_each_session_is_a_subject_with_its_participants_demographics(tmp_path: Path) -> None:
    images = [anat("01", s, session) for session in ("pre", "post") for s in ("T1w", "angio")]
    images += [anat("02", s, "pre") for s in ("T1w", "angio")]
    rows = ["participant_id\tage\tsex\tsite", "sub-01\t60\tm\tLeeds", "sub-02\tn/a\tf\tYork", "sub-03\t70\tF\tn/a"]
    root = write_dataset(tmp_path / "ds", images, rows)

    subjects, exclusions = build_bids_inventory(root, ["T1", "MRA"], site_column="site")

    table = subjects.set_index("subject")
    assert table.index.tolist() == ["sub-01_ses-post", "sub-01_ses-pre", "sub-02_ses-pre", "sub-03"]
    sessions = table.loc[["sub-01_ses-post", "sub-01_ses-pre"]]
    assert sessions["included"].all() and (sessions["age"] == 60).all() and (sessions["sex"] == "M").all()
    assert (sessions["site"] == "Leeds").all()
    assert table.loc["sub-01_ses-post", "path_T1"].endswith("sub-01/ses-post/anat/sub-01_ses-post_T1w.nii.gz")
    reasons = dict(exclusions.itertuples(index=False))
    assert reasons == {"sub-02_ses-pre": NO_AGE, "sub-03": NO_IMAGES}
    assert table.loc["sub-02_ses-pre", "site"] == "" and math.isnan(table.loc["sub-02_ses-pre", "age"])


def test_exclusions_use_the_ixi_words(tmp_path: Path) -> None:
    images = [anat(p, s) for p in ("01", "02", "03", "04", "05") for s in ALL_SUFFIXES]
    images += [anat("06", "T1w"), anat("07", "T1w"), anat("07", "PDw")]
    rows = [
        "participant_id\tage\tsex",
        "sub-01\t35\tM",
        "sub-02\tn/a\tM",
        "sub-03\t\tF",
        "sub-04\tforty\tF",
        "sub-05\t150\tF",
        "sub-06\t44\tF",
        "sub-07\t45\tF",
        "sub-08\t46\tM",
    ]
    root = write_dataset(tmp_path / "ds", images, rows)
    write_image(root / anat("09", "T1w"))  # not in participants.tsv

    subjects, exclusions = build_bids_inventory(root, ["T1", "PD", "MRA"])

    assert subjects.loc[subjects["included"], "subject"].tolist() == ["sub-01"]
    assert dict(exclusions.itertuples(index=False)) == {
        "sub-02": NO_AGE,
        "sub-03": NO_AGE,
        "sub-04": implausible_age("forty"),
        "sub-05": "age 150 is not a plausible age (allowed 0-120)",
        "sub-06": "missing required modality PD, MRA",
        "sub-07": "missing required modality MRA",
        "sub-08": NO_IMAGES,
        "sub-09": f"{NOT_IN_SHEET}; missing required modality PD, MRA",
    }


def test_a_corrupt_angiogram_excludes_its_subject_only(tmp_path: Path) -> None:
    root = three_subjects(tmp_path / "ds")
    angio = root / anat("02", "angio")
    angio.write_bytes(angio.read_bytes()[:200])

    subjects, exclusions = build_bids_inventory(root, ["T1", "MRA"], threads=2)

    assert subjects.loc[subjects["included"], "subject"].tolist() == ["sub-01", "sub-03"]
    (reason,) = exclusions.loc[exclusions["subject"] == "sub-02", "reason"]
    assert reason.startswith(f"bad MRA image {angio}: cannot be read")


def test_participants_without_the_age_column_fail_before_any_image_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_dataset(tmp_path / "ds", [anat("01", s) for s in ALL_SUFFIXES], ["participant_id\tsex", "sub-01\tM"])
    loaded: list[str] = []
    monkeypatch.setattr(inventory, "load_image", lambda path, subject=None: loaded.append(path))

    with pytest.raises(BidsError, match=r"participants\.tsv: no age column 'age'; columns: participant_id, sex"):
        build_bids_inventory(root, ["T1", "MRA"])
    assert loaded == []


def test_missing_participants_file_names_the_expected_path(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "ds", [anat("01", "T1w")], None)
    with pytest.raises(BidsError, match=re.escape(f"{root / 'participants.tsv'}: not found")):
        build_bids_inventory(root, ["T1"])


def test_configurable_column_names_and_sex_codes(tmp_path: Path) -> None:
    rows = [
        "participant_id\tAge_years\tgender\tscanner",
        "sub-01\t20\tMALE\tA",
        "sub-02\t30\tFemale\tB",
        "sub-03\t40\t2\tn/a",
        "sub-04\t50\tn/a\tA",
    ]
    root = write_dataset(tmp_path / "ds", [], rows)

    demographics, exclusions = read_participants(root, "Age_years", "gender", "scanner")

    assert exclusions.empty
    assert demographics["age"].tolist() == [20.0, 30.0, 40.0, 50.0]
    assert demographics["sex"].tolist()[:3] == ["M", "F", "2"] and math.isnan(demographics["sex"].iloc[3])
    assert demographics["site"].tolist() == ["A", "B", "", "A"]
    with pytest.raises(BidsError, match=r"no age column 'age'; columns: participant_id, Age_years, gender"):
        read_participants(root)
    with pytest.raises(BidsError, match=r"no sex column 'sex'"):
        read_participants(root, "Age_years")
    assert read_participants(root, "Age_years", None)[0]["sex"].isna().all()


def test_participants_ids_must_be_bids_and_unique(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "ds", [], ["participant_id\tage", "sub-01\t20", "02\t30"])
    with pytest.raises(BidsError, match=r"participants\.tsv: line 3: participant_id '02' is not sub-<label>"):
        read_participants(root, sex_column=None)
    (root / "participants.tsv").write_text("participant_id\tage\nsub-01\t20\nsub-01\t30\n")
    with pytest.raises(BidsError, match=r"participants\.tsv: participant_id appears more than once: sub-01"):
        read_participants(root, sex_column=None)
    (root / "participants.tsv").write_text("participant_id\tage\n")
    with pytest.raises(BidsError, match=r"participants\.tsv: no participants below the header"):
        read_participants(root, sex_column=None)
    (root / "participants.tsv").write_text("age\n20\n")
    with pytest.raises(BidsError, match=r"no participant id column 'participant_id'; columns: age"):
        read_participants(root)


@pytest.mark.parametrize(
    ("description", "problem"),
    [(None, "is missing"), ({"Name": "no version"}, "Mandatory 'BIDSVersion' field missing")],
)
def test_an_invalid_dataset_names_its_description(tmp_path: Path, description: dict | None, problem: str) -> None:
    root = write_dataset(tmp_path / "ds", [anat("01", "T1w")], ["participant_id\tage", "sub-01\t20"], description)
    expected = f"{root / 'dataset_description.json'}: not a valid BIDS dataset"
    with pytest.raises(BidsError, match=re.escape(expected)) as error:
        build_bids_inventory(root, ["T1"])
    assert problem in str(error.value)


def test_two_files_for_one_scan_are_an_error_naming_both(tmp_path: Path) -> None:
    runs = [anat("01", "T1w", entities="_run-1"), anat("01", "T1w", entities="_run-2")]
    root = write_dataset(tmp_path / "ds", [*runs, anat("01", "angio")], ["participant_id\tage", "sub-01\t20"])
    with pytest.raises(BidsError, match=r"sub-01: 2 T1w images for its T1 scan") as error:
        scan_bids(root)
    assert all(str(root / run) in str(error.value) for run in runs)

    acquisitions = [anat("02", "angio", "a", "_acq-fast"), anat("02", "angio", "a", "_acq-slow")]
    root = write_dataset(tmp_path / "ds2", acquisitions, ["participant_id\tage", "sub-02\t20"])
    with pytest.raises(BidsError, match=r"sub-02_ses-a: 2 angio images for its MRA scan") as error:
        scan_bids(root)
    assert all(str(root / a) in str(error.value) for a in acquisitions)


def test_per_session_repeats_participants_and_keeps_those_without_images() -> None:
    table = pd.DataFrame({"subject": ["sub-01", "sub-02", "sub-03"], "age": [1.0, 2.0, 3.0]})
    expanded = per_session(table, ["sub-01_ses-b", "sub-01_ses-a", "sub-03", "sub-04_ses-a"])
    assert expanded["subject"].tolist() == ["sub-01_ses-a", "sub-01_ses-b", "sub-02", "sub-03"]
    assert expanded["age"].tolist() == [1.0, 1.0, 2.0, 3.0]
