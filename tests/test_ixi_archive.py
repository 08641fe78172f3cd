"""Unpacking IXI safely: verified archives only, complete tars only, a raw folder the workflow owns.

Real tar files on disk, cut, mislabelled and malformed the ways a download or a hand-made archive
can be; every refusal must name the archive (and the member) and leave nothing extracted.
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
from pathlib import Path

import pytest

from brainage import ixi
from brainage.config import ConfigError
from test_ixi import make_tar, quiet, regular, snapshot, special

MODALITIES = ("T1", "PD", "MRA")


def ixi_archive(path: Path, modality: str, ids: tuple[int, ...] = (2, 12, 13)) -> Path:
    """A flat tar like IXI's: small random files named like that modality's images."""
    members = [regular(f"IXI{i:03d}-Guys-{828 + i:04d}-{modality}.nii.gz", os.urandom(300)) for i in ids]
    return make_tar(path, members)


def entry(archive: Path, **changes: object) -> ixi.FileEntry:
    """The file-table entry that describes ``archive`` truly, unless ``changes`` say otherwise."""
    fields = {
        "name": archive.name,
        "url": f"https://example.org/{archive.name}",
        "md5": hashlib.md5(archive.read_bytes()).hexdigest(),
        "size_bytes": archive.stat().st_size,
    }
    return ixi.FileEntry(**(fields | changes))


def all_archives(folder: Path) -> dict[str, Path]:
    folder.mkdir(exist_ok=True)
    return {modality: ixi_archive(folder / f"IXI-{modality}.tar", modality) for modality in MODALITIES}


def cut(archive: Path, n_bytes: int) -> Path:
    archive.write_bytes(archive.read_bytes()[:n_bytes])
    return archive


def member_offsets(archive: Path) -> list[int]:
    """Where each member's header starts: the block boundaries between members."""
    with tarfile.open(archive) as tar:
        return [member.offset for member in tar.getmembers()]


# ---------------------------------------------------------------------------------------------
# Item: an archive is verified against the file table before anything is extracted


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"md5": "0" * 32}, r"IXI-PD.tar: MD5 mismatch, expected 0{32}, got [0-9a-f]{32}"),
        ({"size_bytes": 1}, r"IXI-PD.tar: \d+ bytes, expected 1"),
    ],
    ids=["md5", "size"],
)
def test_archive_differing_from_the_file_table_extracts_nothing(tmp_path: Path, change: dict, message: str) -> None:
    archives = all_archives(tmp_path / "downloads")
    entries = {modality: entry(archive) for modality, archive in archives.items()}
    entries["PD"] = entry(archives["PD"], **change)
    raw = tmp_path / "raw"
    with pytest.raises(ixi.ArchiveError, match=message) as caught:
        ixi.extract_ixi(archives, entries, raw, progress=quiet)
    assert "nothing was extracted" in str(caught.value)
    assert not raw.exists()  # not even T1, which comes first and is fine


def test_verified_archives_extract_into_a_folder_marked_as_the_workflows(tmp_path: Path) -> None:
    archives = all_archives(tmp_path / "downloads")
    entries = {modality: entry(archive) for modality, archive in archives.items()}
    raw = tmp_path / "raw"
    assert ixi.extract_ixi(archives, entries, raw, progress=quiet) == raw
    assert sorted(p.name for p in raw.iterdir()) == sorted([ixi.OWNER_MARKER, "IXI-MRA", "IXI-PD", "IXI-T1"])
    assert len(list(raw.glob("IXI-*/*.nii.gz"))) == 9
    ixi.check_raw_dir(Path("raw"), tmp_path, [])  # a later run accepts the folder as its own


# ---------------------------------------------------------------------------------------------
# Item: a cut or mislabelled tar is refused whole


@pytest.mark.parametrize("where", ["between members", "before the end marker"])
def test_tar_cut_at_a_block_boundary_is_refused(tmp_path: Path, where: str) -> None:
    archive = ixi_archive(tmp_path / "IXI-T1.tar", "T1")
    offsets = member_offsets(archive)
    with tarfile.open(archive) as tar:
        last = tar.getmembers()[-1]
        end_of_data = last.offset_data + -(-last.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
    cut(archive, offsets[2] if where == "between members" else end_of_data)
    before = snapshot(tmp_path)
    with pytest.raises(ixi.ArchiveError, match=re.escape("IXI-T1.tar: no end-of-archive marker after member 'IXI0")):
        ixi.extract_archive(archive, tmp_path / "raw" / "IXI-T1", progress=quiet)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "name", ["IXI002-Guys-0830-PD.nii.gz", "notes.txt", "IXI2-Guys-0830-T1.nii.gz", "IXI002-Mars-0830-T1.nii.gz"]
)
def test_member_that_is_not_an_image_of_the_archives_modality_is_refused(tmp_path: Path, name: str) -> None:
    archives = all_archives(tmp_path / "downloads")
    make_tar(archives["T1"], [regular("IXI012-Guys-0840-T1.nii.gz", b"x"), regular(name, b"y")])
    refusal = rf"IXI-T1.tar: refusing to extract member '{name}': not an IXI T1"
    with pytest.raises(ixi.ArchiveMemberError, match=refusal):
        ixi.prepare_raw(archives, tmp_path / "raw", progress=quiet)
    assert not (tmp_path / "raw").exists()


def test_one_bad_archive_extracts_none_of_the_others(tmp_path: Path) -> None:
    archives = all_archives(tmp_path / "downloads")
    cut(archives["MRA"], member_offsets(archives["MRA"])[1])
    with pytest.raises(ixi.ArchiveError, match=re.escape("IXI-MRA.tar: no end-of-archive marker")):
        ixi.prepare_raw(archives, tmp_path / "raw", progress=quiet)
    assert not (tmp_path / "raw").exists()


# ---------------------------------------------------------------------------------------------
# Item: every file has a checksum


def test_file_table_row_without_md5_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "files.tsv"
    path.write_text("name\turl\tmd5\tsize_bytes\tnote\nA.tar\thttps://x/A.tar\t\t100\t\n")
    with pytest.raises(ixi.FileTableError, match=re.escape("files.tsv: A.tar: md5 is missing")):
        ixi.read_file_table(path)


def test_md5_override_cannot_blank_the_checksum() -> None:
    table = ixi.read_file_table(Path(__file__).resolve().parents[1] / "resources" / "ixi_files.tsv")
    assert all(ixi.file_entry(table, name).md5 for name in table["name"])
    with pytest.raises(ixi.FileTableError, match=re.escape("IXI-T1.tar: MD5 override ''")):
        ixi.file_entry(table, "IXI-T1.tar", md5_override="")


# ---------------------------------------------------------------------------------------------
# Item: malformed archives and destinations fail naming the archive


@pytest.mark.parametrize(
    ("members", "member", "reason"),
    [
        (
            [regular("a.nii.gz", b"1"), special("b.nii.gz", tarfile.LNKTYPE, "missing.nii.gz")],
            "b.nii.gz",
            "not an earlier file",
        ),
        (
            [special("b.nii.gz", tarfile.LNKTYPE, "a.nii.gz"), regular("a.nii.gz", b"1")],
            "b.nii.gz",
            "not an earlier file",
        ),
        ([regular("a.nii.gz", b"1"), regular("a.nii.gz", b"2")], "a.nii.gz", "appears twice"),
        ([regular("x" * 300, b"1")], "x" * 300, "longer than the file system allows"),
        ([regular("d/" * 2100 + "f", b"1")], "d/" * 2100 + "f", "longer than the file system allows"),
    ],
    ids=["hardlink-missing", "hardlink-forward", "duplicate", "long-component", "long-path"],
)
def test_malformed_member_is_named_and_nothing_is_written(
    tmp_path: Path, members: list, member: str, reason: str
) -> None:
    archive = make_tar(tmp_path / "IXI-T1.tar", members)
    before = snapshot(tmp_path)
    with pytest.raises(ixi.ArchiveMemberError, match=f"IXI-T1.tar: refusing to extract member '{member}': .*{reason}"):
        ixi.extract_archive(archive, tmp_path / "raw" / "IXI-T1", progress=quiet)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("where", ["destination", "component to a folder", "component to a file"])
def test_destination_through_a_symbolic_link_or_file_is_refused(tmp_path: Path, where: str) -> None:
    archive = ixi_archive(tmp_path / "IXI-T1.tar", "T1")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "a-file").write_text("mine")
    if where == "destination":
        (tmp_path / "IXI-T1").symlink_to(tmp_path / "elsewhere")
        dest, culprit = tmp_path / "IXI-T1", tmp_path / "IXI-T1"
    elif where == "component to a folder":
        (tmp_path / "raw").symlink_to(tmp_path / "elsewhere")
        dest, culprit = tmp_path / "raw" / "IXI-T1", tmp_path / "raw"
    else:
        dest, culprit = tmp_path / "a-file" / "IXI-T1", tmp_path / "a-file"
    before = snapshot(tmp_path)
    with pytest.raises(ixi.ArchiveError, match=f"IXI-T1.tar: destination {dest}: {culprit} is "):
        ixi.extract_archive(archive, dest, progress=quiet)
    assert snapshot(tmp_path) == before
    assert not any((tmp_path / "elsewhere").iterdir())


# ---------------------------------------------------------------------------------------------
# Item: the raw folder is the workflow's own, or it is not written


def test_raw_dir_for_download_must_be_new_or_the_workflows_own(tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "results").mkdir(parents=True)
    (work / "empty").mkdir()
    (work / "owned").mkdir()
    (work / "owned" / ixi.OWNER_MARKER).write_text("")
    (work / "owned" / "IXI-T1").mkdir()
    for fine in ("results/ixi/raw", "data/raw", "empty", "owned"):
        ixi.check_raw_dir(Path(fine), work, [Path("results")])

    (work / "mine").mkdir()
    (work / "mine" / "IXI002-Guys-0828-T1.nii.gz").write_bytes(b"only copy")
    (tmp_path / "outside").mkdir()
    (work / "link").symlink_to(tmp_path / "outside")
    refused = {
        "mine": "already exists and is not a folder this workflow extracted",
        "../outside": "not inside the working directory",
        "/etc": "not inside the working directory",
        "link/raw": "not inside the working directory",
        ".": "not inside the working directory",
        "results": "would delete results with it",
    }
    for raw_dir, problem in refused.items():
        with pytest.raises(ConfigError, match=rf"config key 'dataset.raw_dir': '{raw_dir}' .*{problem}"):
            ixi.check_raw_dir(Path(raw_dir), work, [Path("results")])
    assert (work / "mine" / "IXI002-Guys-0828-T1.nii.gz").read_bytes() == b"only copy"
