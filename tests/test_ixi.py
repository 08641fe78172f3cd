"""Downloading and unpacking IXI, against a real HTTP server on 127.0.0.1 and real tar files."""

from __future__ import annotations

import hashlib
import io
import os
import re
import socket
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from brainage.ixi import (
    ArchiveError,
    ChecksumError,
    DownloadError,
    FileTableError,
    UnsafeArchiveError,
    download,
    extract_archive,
    file_entry,
    part_path,
    prepare_raw,
    read_file_table,
)
from http_server import Served

ROOT = Path(__file__).resolve().parents[1]
FILE_TABLE = ROOT / "resources" / "ixi_files.tsv"
# Tiny waits between retries: the tests exercise the retry logic, not the patience.
FAST = {"backoff_s": 0.01, "timeout_s": 10.0, "chunk_bytes": 4096}


def quiet(line: str) -> None:
    """A progress callback that discards the lines, for tests that do not look at them."""


def serve(server: Served, name: str, n_bytes: int = 100_000) -> tuple[bytes, str]:
    """Put a file of random bytes on the server; return its content and MD5."""
    data = os.urandom(n_bytes)
    (server.root / name).write_bytes(data)
    return data, hashlib.md5(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# The file table


def test_file_table_lists_the_official_files() -> None:
    table = read_file_table(FILE_TABLE)
    assert list(table["name"]) == ["IXI-T1.tar", "IXI-PD.tar", "IXI-MRA.tar", "IXI.xls"]
    t1 = file_entry(table, "IXI-T1.tar")
    assert t1.url == "https://biomedic.doc.ic.ac.uk/brain-development/downloads/IXI/IXI-T1.tar"
    assert (t1.md5, t1.size_bytes) == ("34901a0593b41dd19c1a1f746eac2d58", 4840816640)
    mra = file_entry(table, "IXI-MRA.tar")
    assert mra.size_bytes is None and "12.4 GB" in mra.note
    sheet = file_entry(table, "IXI.xls")
    assert sheet.size_bytes == 210432 and "no official MD5" in sheet.note


def test_file_entry_override_and_unknown_name() -> None:
    table = read_file_table(FILE_TABLE)
    assert file_entry(table, "IXI.xls", md5_override="A" * 32).md5 == "a" * 32
    with pytest.raises(FileTableError, match=re.escape("IXI.xls: MD5 override 'nope'")):
        file_entry(table, "IXI.xls", md5_override="nope")
    with pytest.raises(FileTableError, match=re.escape("no file named 'IXI-T2.tar'")):
        file_entry(table, "IXI-T2.tar")


def test_malformed_file_table_names_file_and_row(tmp_path: Path) -> None:
    path = tmp_path / "files.tsv"
    path.write_text("name\turl\tmd5\tsize_bytes\tnote\nA.tar\thttps://x/A.tar\t1234\t\t\n")
    with pytest.raises(FileTableError, match=r"files.tsv: A.tar: md5 '1234'"):
        read_file_table(path)


# ---------------------------------------------------------------------------------------------
# Downloading


def test_full_download_verifies_md5(server: Served, tmp_path: Path) -> None:
    data, md5 = serve(server, "IXI-T1.tar")
    lines: list[str] = []
    url = f"{server.url}/files/IXI-T1.tar"
    dest = download(url, tmp_path / "dl" / "IXI-T1.tar", md5, len(data), progress=lines.append, **FAST)
    assert dest.read_bytes() == data
    assert not part_path(dest).exists()
    assert any("(100.0%)" in line and "MB/s" in line for line in lines)
    assert server.requests == [("/files/IXI-T1.tar", None)]


def test_cut_off_download_resumes_with_range(server: Served, tmp_path: Path) -> None:
    data, md5 = serve(server, "IXI-PD.tar")
    server.cut_after = len(data) // 2
    url = f"{server.url}/files/IXI-PD.tar"
    dest = download(url, tmp_path / "IXI-PD.tar", md5, len(data), progress=quiet, **FAST)
    assert dest.read_bytes() == data
    assert len(server.requests) == 2
    assert server.requests[0][1] is None
    assert server.requests[1][1] == f"bytes={len(data) // 2}-"


def test_leftover_part_from_an_earlier_run_is_resumed(server: Served, tmp_path: Path) -> None:
    """The MD5 covers the bytes of the earlier run too, without a size to go by."""
    data, md5 = serve(server, "IXI-MRA.tar")
    dest = tmp_path / "IXI-MRA.tar"
    part_path(dest).write_bytes(data[:30_000])
    download(f"{server.url}/files/IXI-MRA.tar", dest, md5, progress=quiet, **FAST)
    assert dest.read_bytes() == data
    assert server.requests == [("/files/IXI-MRA.tar", "bytes=30000-")]


def test_server_ignoring_range_starts_over(server: Served, tmp_path: Path) -> None:
    data, md5 = serve(server, "IXI-T1.tar")
    server.ignore_range = True
    dest = tmp_path / "IXI-T1.tar"
    part_path(dest).write_bytes(b"stale bytes that must not survive")
    lines: list[str] = []
    download(f"{server.url}/files/IXI-T1.tar", dest, md5, len(data), progress=lines.append, **FAST)
    assert dest.read_bytes() == data
    assert any("ignored the range request" in line for line in lines)


def test_complete_part_answered_416_is_verified_and_kept(server: Served, tmp_path: Path) -> None:
    data, md5 = serve(server, "IXI.xls")
    dest = tmp_path / "IXI.xls"
    part_path(dest).write_bytes(data)
    download(f"{server.url}/files/IXI.xls", dest, md5, progress=quiet, **FAST)
    assert dest.read_bytes() == data
    assert server.requests == [("/files/IXI.xls", f"bytes={len(data)}-")]


def test_wrong_md5_names_file_and_checksums_and_removes_only_the_part(server: Served, tmp_path: Path) -> None:
    data, md5 = serve(server, "IXI-T1.tar")
    folder = tmp_path / "downloads"
    folder.mkdir()
    neighbour = folder / "IXI-PD.tar"
    neighbour.write_bytes(b"another download")
    neighbour_part = part_path(folder / "IXI-MRA.tar")
    neighbour_part.write_bytes(b"another partial download")
    dest = folder / "IXI-T1.tar"
    wrong = "0" * 32
    with pytest.raises(ChecksumError) as caught:
        download(f"{server.url}/files/IXI-T1.tar", dest, wrong, len(data), progress=quiet, **FAST)
    message = str(caught.value)
    assert "IXI-T1.tar" in message and wrong in message and md5 in message
    assert not dest.exists() and not part_path(dest).exists()
    assert sorted(p.name for p in folder.iterdir()) == ["IXI-MRA.tar.part", "IXI-PD.tar"]
    assert neighbour.read_bytes() == b"another download"
    assert neighbour_part.read_bytes() == b"another partial download"


def test_redirect_is_followed(server: Served, tmp_path: Path) -> None:
    data, md5 = serve(server, "IXI.xls")
    url = f"{server.url}/redirect/IXI.xls"
    dest = download(url, tmp_path / "IXI.xls", md5, len(data), progress=quiet, **FAST)
    assert dest.read_bytes() == data
    assert [path for path, _ in server.requests] == ["/redirect/IXI.xls", "/files/IXI.xls"]


def test_existing_verified_file_is_not_downloaded_again(server: Served, tmp_path: Path) -> None:
    data, md5 = serve(server, "IXI.xls")
    dest = tmp_path / "IXI.xls"
    dest.write_bytes(data)
    download(f"{server.url}/files/IXI.xls", dest, md5, len(data), progress=quiet, **FAST)
    assert server.requests == []


def test_existing_file_with_wrong_md5_is_replaced(server: Served, tmp_path: Path) -> None:
    data, md5 = serve(server, "IXI.xls")
    dest = tmp_path / "IXI.xls"
    dest.write_bytes(b"an older, different sheet")
    download(f"{server.url}/files/IXI.xls", dest, md5, progress=quiet, **FAST)
    assert dest.read_bytes() == data


def test_size_disagreeing_with_the_server_fails_naming_both(server: Served, tmp_path: Path) -> None:
    data, md5 = serve(server, "IXI-T1.tar")
    url = f"{server.url}/files/IXI-T1.tar"
    with pytest.raises(DownloadError, match=f"server has {len(data)} bytes, expected {len(data) + 1}"):
        download(url, tmp_path / "IXI-T1.tar", md5, len(data) + 1, progress=quiet, **FAST)
    assert not (tmp_path / "IXI-T1.tar").exists()


def test_missing_file_fails_at_once_naming_the_url(server: Served, tmp_path: Path) -> None:
    url = f"{server.url}/files/IXI-T2.tar"
    with pytest.raises(DownloadError, match=re.escape(f"{url}: HTTP 404")):
        download(url, tmp_path / "IXI-T2.tar", None, progress=quiet, **FAST)
    assert len(server.requests) == 1


def test_unreachable_server_gives_up_after_the_retries(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a local port that nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/IXI-T1.tar"
    lines: list[str] = []
    with pytest.raises(DownloadError, match="giving up after 3 failed attempts"):
        download(url, tmp_path / "IXI-T1.tar", None, retries=2, progress=lines.append, **FAST)
    assert sum("retrying" in line for line in lines) == 2


# ---------------------------------------------------------------------------------------------
# Extracting


def make_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    """Write a tar of the given headers, with the given contents for regular files."""
    with tarfile.open(path, "w") as tar:
        for info, content in members:
            if content is not None:
                info.size = len(content)
            tar.addfile(info, io.BytesIO(content) if content is not None else None)
    return path


def regular(name: str, content: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), content


def special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info, None


def ixi_tar(path: Path, modality: str, ids: tuple[int, ...] = (2, 12, 13)) -> tuple[Path, dict[str, bytes]]:
    """A flat tar like IXI's, of small random files named like its images."""
    files = {f"IXI{i:03d}-Guys-{828 + i:04d}-{modality}.nii.gz": os.urandom(500) for i in ids}
    return make_tar(path, [regular(name, content) for name, content in files.items()]), files


def snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.parametrize(
    ("evil", "reason"),
    [
        (lambda tmp: regular("../evil", b"x"), "'..'"),
        (lambda tmp: regular(str(tmp / "abs-evil"), b"x"), "absolute path"),
        (lambda tmp: special("link", tarfile.SYMTYPE, "../../outside"), "points outside"),
        (lambda tmp: special("link", tarfile.SYMTYPE, str(tmp / "outside")), "absolute path"),
        (lambda tmp: special("hard", tarfile.LNKTYPE, "../outside"), "points outside"),
        (lambda tmp: special("null", tarfile.CHRTYPE), "device file"),
        (lambda tmp: special("fifo", tarfile.FIFOTYPE), "FIFO file"),
    ],
    ids=["dotdot", "absolute", "symlink-out", "symlink-absolute", "hardlink-out", "device", "fifo"],
)
def test_unsafe_member_is_refused_and_nothing_is_written(
    tmp_path: Path, evil: Callable[[Path], tuple[tarfile.TarInfo, bytes | None]], reason: str
) -> None:
    member = evil(tmp_path)
    # A harmless file first and a file written through the link after: neither may appear.
    archive = make_tar(
        tmp_path / "IXI-T1.tar",
        [regular("IXI002-Guys-0828-T1.nii.gz", b"fine"), member, regular("link/evil.txt", b"x")],
    )
    before = snapshot(tmp_path)
    with pytest.raises(UnsafeArchiveError, match=re.escape(f"member '{member[0].name}'")) as caught:
        extract_archive(archive, tmp_path / "raw" / "IXI-T1", progress=quiet)
    assert "IXI-T1.tar" in str(caught.value) and reason in str(caught.value)
    assert snapshot(tmp_path) == before


def test_links_chained_to_escape_are_refused(tmp_path: Path) -> None:
    """Each link looks harmless on its own; 'b' -> 'a/..' with 'a' -> '.' leads out of the folder."""
    archive = make_tar(
        tmp_path / "IXI-T1.tar",
        [special("a", tarfile.SYMTYPE, "."), special("b", tarfile.SYMTYPE, "a/.."), regular("b/evil.txt", b"x")],
    )
    before = snapshot(tmp_path)
    with pytest.raises(
        UnsafeArchiveError, match=re.escape("member 'b': symbolic link to 'a/..' goes through a symbolic link")
    ):
        extract_archive(archive, tmp_path / "raw" / "IXI-T1", progress=quiet)
    assert snapshot(tmp_path) == before


def test_good_tar_extracts_read_only_files(tmp_path: Path) -> None:
    archive, files = ixi_tar(tmp_path / "IXI-T1.tar", "T1")
    dest = tmp_path / "raw" / "IXI-T1"
    extracted = extract_archive(archive, dest, progress=quiet)
    assert extracted == sorted(dest / name for name in files)
    for path in extracted:
        assert path.read_bytes() == files[path.name]
        assert path.stat().st_mode & 0o777 == 0o444
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["IXI-T1"]  # no temporary folder left


def test_extraction_refuses_a_nonempty_destination(tmp_path: Path) -> None:
    archive, _ = ixi_tar(tmp_path / "IXI-T1.tar", "T1")
    dest = tmp_path / "IXI-T1"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(ArchiveError, match="already exists and is not an empty folder"):
        extract_archive(archive, dest, progress=quiet)
    assert snapshot(dest) == {"keep.txt"}


def test_corrupt_archive_is_named(tmp_path: Path) -> None:
    archive = tmp_path / "IXI-PD.tar"
    archive.write_bytes(os.urandom(2000))
    with pytest.raises(ArchiveError, match=re.escape("IXI-PD.tar: cannot be read as a tar archive")):
        extract_archive(archive, tmp_path / "IXI-PD", progress=quiet)
    assert not (tmp_path / "IXI-PD").exists()


def test_prepare_raw_downloads_and_extracts_each_modality_once(server: Served, tmp_path: Path) -> None:
    archives, expected = {}, {}
    for modality in ("T1", "PD", "MRA"):
        tar, files = ixi_tar(server.root / f"IXI-{modality}.tar", modality)
        md5 = hashlib.md5(tar.read_bytes()).hexdigest()
        url = f"{server.url}/files/{tar.name}"
        archives[modality] = download(url, tmp_path / "archives" / tar.name, md5, progress=quiet, **FAST)
        expected[f"IXI-{modality}"] = set(files)
    raw = tmp_path / "raw"
    assert prepare_raw(archives, raw, progress=quiet) == raw
    assert {folder.name: {p.name for p in folder.iterdir()} for folder in raw.iterdir()} == expected
    stamps = {p: p.stat().st_mtime_ns for p in raw.rglob("*")}
    lines: list[str] = []
    prepare_raw(archives, raw, progress=lines.append)
    assert {p: p.stat().st_mtime_ns for p in raw.rglob("*")} == stamps
    assert sum("already extracted" in line for line in lines) == 3


def test_prepare_raw_rejects_an_unknown_scan(tmp_path: Path) -> None:
    archive, _ = ixi_tar(tmp_path / "IXI-T2.tar", "T2")
    with pytest.raises(ArchiveError, match=r"unknown scan \['T2'\]"):
        prepare_raw({"T2": archive}, tmp_path / "raw", progress=quiet)
    assert not (tmp_path / "raw").exists()
