"""Getting the real IXI study onto disk: download the official files, verify them, unpack them.

The IXI tars are several gigabytes each on a server that drops connections, so
:func:`download` resumes a partial file with HTTP range requests and verifies size and MD5
before the file appears under its final name: a file under its final name is always whole.
:func:`extract_archive` checks every member of a tar before writing anything and unpacks into
a temporary folder that is renamed into place, so the raw folder is either complete or absent.

``brainage.io.atomic_path`` does not fit here: a download must keep a predictable ``.part``
name to resume from, and an extraction renames a whole folder, not one file.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import stat
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pandas as pd

from brainage.inventory import MODALITIES

FILE_TABLE_COLUMNS = ["name", "url", "md5", "size_bytes", "note"]

# Often enough to show a multi-gigabyte download is alive, rarely enough to keep logs short.
PROGRESS_INTERVAL_S = 10.0
USER_AGENT = "brainage-ixi-downloader"
_MD5_PATTERN = re.compile(r"[0-9a-f]{32}")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes \*/(\d+)")
_MB = 1e6


class FileTableError(ValueError):
    """The table of downloadable files is malformed or lacks the requested file."""


class DownloadError(RuntimeError):
    """A download that cannot complete: permanent HTTP error, retries used up, wrong size."""


class ChecksumError(DownloadError):
    """A downloaded file whose MD5 differs from the expected one."""

    def __init__(self, path: Path, expected: str, actual: str) -> None:
        self.path = path
        self.expected = expected
        self.actual = actual
        super().__init__(f"{path}: MD5 mismatch, expected {expected}, got {actual}")


class ArchiveError(ValueError):
    """A tar archive that cannot be read or extracted."""


class UnsafeArchiveError(ArchiveError):
    """A tar archive with a member that would write outside its folder or create a device."""

    def __init__(self, archive: Path, member: str, reason: str) -> None:
        self.archive = archive
        self.member = member
        super().__init__(f"{archive}: refusing to extract member '{member}': {reason}")


class _TransientError(Exception):
    """A network failure worth retrying: the next attempt resumes from the partial file."""

    def __init__(self, message: str, received: int) -> None:
        self.message = message
        self.received = received
        super().__init__(message)


@dataclass(frozen=True)
class FileEntry:
    """One downloadable file; ``md5`` and ``size_bytes`` are None when unknown."""

    name: str
    url: str
    md5: str | None
    size_bytes: int | None
    note: str = ""


# ---------------------------------------------------------------------------------------------
# The file table


def read_file_table(path: Path) -> pd.DataFrame:
    """Read ``resources/ixi_files.tsv``: one row per file, columns name, url, md5, size_bytes, note.

    Every cell is kept as text (an empty cell is ""), so a checksum is never read as a number.
    Malformed rows raise :class:`FileTableError` naming the file and the row's name.
    """
    path = Path(path)
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    if list(table.columns) != FILE_TABLE_COLUMNS:
        raise FileTableError(f"{path}: columns are {list(table.columns)}, expected {FILE_TABLE_COLUMNS}")
    duplicated = sorted(set(table["name"][table["name"].duplicated()]))
    if duplicated:
        raise FileTableError(f"{path}: file names listed twice: {duplicated}")
    for row in table.itertuples(index=False):
        if not row.url.startswith(("http://", "https://")):
            raise FileTableError(f"{path}: {row.name}: url '{row.url}' is not http(s)")
        if row.md5 and not _MD5_PATTERN.fullmatch(row.md5):
            raise FileTableError(f"{path}: {row.name}: md5 '{row.md5}' is not 32 lower-case hex digits")
        if row.size_bytes and not row.size_bytes.isdigit():
            raise FileTableError(f"{path}: {row.name}: size_bytes '{row.size_bytes}' is not a whole number")
    return table


def file_entry(table: pd.DataFrame, name: str, md5_override: str | None = None) -> FileEntry:
    """The entry for ``name``; ``md5_override`` (from the config) replaces the table's checksum.

    The override exists because IXI publishes no checksum for IXI.xls, and a site may replace
    a file: the configuration, not this table, has the last word.
    """
    rows = table[table["name"] == name]
    if rows.empty:
        raise FileTableError(f"no file named '{name}' in the file table; known: {sorted(table['name'])}")
    row = rows.iloc[0]
    md5 = row["md5"] or None
    if md5_override is not None:
        md5 = md5_override.lower()
        if not _MD5_PATTERN.fullmatch(md5):
            raise FileTableError(f"{name}: MD5 override '{md5_override}' is not 32 hex digits")
    size = int(row["size_bytes"]) if row["size_bytes"] else None
    return FileEntry(name=name, url=row["url"], md5=md5, size_bytes=size, note=row["note"])


# ---------------------------------------------------------------------------------------------
# Downloading


def part_path(dest: Path) -> Path:
    """Where :func:`download` keeps the incomplete file: ``dest`` plus ``.part``."""
    return dest.with_name(dest.name + ".part")


def md5_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """The MD5 of a file, read in chunks so a multi-gigabyte tar never sits in memory."""
    digest = hashlib.md5()
    with open(path, "rb") as stream:
        while chunk := stream.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def download(
    url: str,
    dest: Path,
    md5: str | None,
    size: int | None = None,
    retries: int = 5,
    backoff_s: float = 2.0,
    timeout_s: float = 60.0,
    progress: Callable[[str], None] = print,
    chunk_bytes: int = 1 << 20,
) -> Path:
    """Download ``url`` to ``dest``, resuming an earlier partial download; return ``dest``.

    The data go to ``dest.part``; an existing ``.part`` is continued with a ``Range`` request
    (a server that answers 200 instead of 206 makes it start over). Connection errors and short
    reads are retried up to ``retries`` times in a row, waiting ``backoff_s``, then twice as long
    each time. Size (when known) and MD5 (when given) are checked before ``.part`` is renamed to
    ``dest``; a mismatch deletes the ``.part`` alone, so a rerun starts clean, and raises
    :class:`DownloadError` (:class:`ChecksumError` for the MD5). If ``dest`` already holds the
    expected file, nothing is downloaded.
    """
    dest = Path(dest)
    md5 = md5.lower() if md5 else None
    if dest.is_file() and _matches(dest, md5, size, chunk_bytes):
        progress(f"{dest.name}: already downloaded{' and verified' if md5 else ''}")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    digest = _PartDigest()
    failures = 0
    while True:
        try:
            _attempt(url, part, digest, size, timeout_s, progress, chunk_bytes)
            break
        except _TransientError as error:
            # An attempt that made progress is not a failure in a row: a flaky server that cuts
            # every few hundred megabytes must still finish a 12 GB file.
            failures = 1 if error.received > 0 else failures + 1
            if failures > retries:
                raise DownloadError(
                    f"{url}: giving up after {failures} failed attempts in a row ({error.message}); "
                    f"{part} is kept so that a rerun resumes it"
                ) from None
            wait = backoff_s * 2 ** (failures - 1)
            progress(f"{dest.name}: {error.message}; retrying in {wait:.1f} s")
            time.sleep(wait)
    _verify_part(part, dest, digest, md5, size, chunk_bytes)
    os.replace(part, dest)
    progress(f"{dest.name}: done, {dest.stat().st_size / _MB:.1f} MB verified")
    return dest


def _matches(path: Path, md5: str | None, size: int | None, chunk_bytes: int) -> bool:
    """Whether an existing file is the expected one; with neither MD5 nor size, trust it."""
    if size is not None and path.stat().st_size != size:
        return False
    return md5 is None or md5_file(path, chunk_bytes) == md5


class _PartDigest:
    """The running MD5 of the partial file, so a resumed download covers the earlier bytes too."""

    def __init__(self) -> None:
        self.hash = hashlib.md5()
        self.n_bytes = 0

    def sync(self, part: Path, chunk_bytes: int) -> None:
        """Rehash the partial file if the running digest does not describe it (first attempt)."""
        on_disk = part.stat().st_size if part.exists() else 0
        if on_disk != self.n_bytes:
            self.reset()
            if on_disk:
                with open(part, "rb") as stream:
                    while chunk := stream.read(chunk_bytes):
                        self.update(chunk)

    def update(self, chunk: bytes) -> None:
        self.hash.update(chunk)
        self.n_bytes += len(chunk)

    def reset(self) -> None:
        self.hash = hashlib.md5()
        self.n_bytes = 0


def _attempt(
    url: str,
    part: Path,
    digest: _PartDigest,
    size: int | None,
    timeout_s: float,
    progress: Callable[[str], None],
    chunk_bytes: int,
) -> None:
    """One request, appending to ``part``.

    Returns when the partial file is complete as far as the server says; raises
    :class:`_TransientError` for failures worth retrying, :class:`DownloadError` for the others.
    """
    digest.sync(part, chunk_bytes)
    offset = digest.n_bytes
    if size is not None and offset == size:
        return  # complete already; the checksum decides whether it is right
    if size is not None and offset > size:
        _restart(part, digest)
        offset = 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as error:
        _http_error(error, url, part, digest, offset)
        return
    except (OSError, http.client.HTTPException) as error:
        raise _TransientError(f"cannot connect to {url} ({type(error).__name__}: {error})", 0) from None
    with response:
        offset, total = _resume_point(response, url, part, digest, offset, progress)
        if size is not None and total is not None and total != size:
            raise DownloadError(f"{url}: server has {total} bytes, expected {size}")
        expected = size if size is not None else total
        received = _stream(response, part, digest, expected, progress, chunk_bytes)
    if expected is not None and offset + received < expected:
        raise _TransientError(f"connection closed after {offset + received} of {expected} bytes", received)


def _http_error(error: urllib.error.HTTPError, url: str, part: Path, digest: _PartDigest, offset: int) -> None:
    """Settle an HTTP error status: return if the partial file is complete, else raise."""
    error.close()
    if error.code == 416 and offset:
        # The range starts at or past the end: the partial file is complete, unless the
        # server's size says the partial file is longer than the file itself.
        match = _UNSATISFIED_RANGE.fullmatch(error.headers.get("Content-Range", ""))
        if match is None or int(match[1]) == offset:
            return
        _restart(part, digest)
        raise _TransientError(f"partial file is longer than the server's {match[1]} bytes; starting over", 0)
    if error.code >= 500 or error.code == 429:
        raise _TransientError(f"HTTP {error.code} {error.reason} from {url}", 0)
    raise DownloadError(f"{url}: HTTP {error.code} {error.reason}")


def _resume_point(
    response: http.client.HTTPResponse,
    url: str,
    part: Path,
    digest: _PartDigest,
    offset: int,
    progress: Callable[[str], None],
) -> tuple[int, int | None]:
    """Where the response's body starts in the file, and the file's total size if announced."""
    if response.status == 206:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
        if match is None or int(match[1]) != offset:
            _restart(part, digest)
            raise _TransientError(
                f"server answered range {offset}- with '{response.headers.get('Content-Range')}'; starting over", 0
            )
        return offset, None if match[3] == "*" else int(match[3])
    if offset:
        progress(f"{part.name}: server ignored the range request; starting over")
        _restart(part, digest)
    length = response.headers.get("Content-Length")
    return 0, int(length) if length and length.isdigit() else None


def _restart(part: Path, digest: _PartDigest) -> None:
    part.unlink(missing_ok=True)
    digest.reset()


def _stream(
    response: http.client.HTTPResponse,
    part: Path,
    digest: _PartDigest,
    total: int | None,
    progress: Callable[[str], None],
    chunk_bytes: int,
) -> int:
    """Append the response body to ``part`` and the running MD5; return the bytes received."""
    received = 0
    started = last_report = time.monotonic()
    with open(part, "ab") as stream:
        while True:
            try:
                chunk = response.read(chunk_bytes)
            except (OSError, http.client.HTTPException) as error:
                raise _TransientError(f"connection lost ({type(error).__name__}: {error})", received) from None
            if not chunk:
                break
            stream.write(chunk)
            digest.update(chunk)
            received += len(chunk)
            now = time.monotonic()
            if now - last_report >= PROGRESS_INTERVAL_S:
                progress(_progress_line(part, digest.n_bytes, total, received / (now - started)))
                last_report = now
    elapsed = max(time.monotonic() - started, 1e-9)
    progress(_progress_line(part, digest.n_bytes, total, received / elapsed))
    return received


def _progress_line(part: Path, n_bytes: int, total: int | None, bytes_per_s: float) -> str:
    name = part.name.removesuffix(".part")
    rate = f"{bytes_per_s / _MB:.1f} MB/s"
    if total:
        return f"{name}: {n_bytes / _MB:.1f} of {total / _MB:.1f} MB ({100 * n_bytes / total:.1f}%), {rate}"
    return f"{name}: {n_bytes / _MB:.1f} MB, {rate}"


def _verify_part(
    part: Path, dest: Path, digest: _PartDigest, md5: str | None, size: int | None, chunk_bytes: int
) -> None:
    """Check size and MD5 of the complete partial file; on a mismatch delete it and raise."""
    digest.sync(part, chunk_bytes)
    if size is not None and digest.n_bytes != size:
        part.unlink()
        raise DownloadError(f"{dest}: downloaded {digest.n_bytes} bytes, expected {size}")
    actual = digest.hash.hexdigest()
    if md5 is not None and actual != md5:
        part.unlink()
        raise ChecksumError(dest, md5, actual)


# ---------------------------------------------------------------------------------------------
# Extracting


def extract_archive(archive: Path, dest_dir: Path, progress: Callable[[str], None] = print) -> list[Path]:
    """Extract the tar ``archive`` into ``dest_dir`` (which must not exist or be empty).

    Every member is checked first; an absolute path, a ``..`` component, a link leading out of
    ``dest_dir``, or a device, FIFO or other special file raises :class:`UnsafeArchiveError`
    naming the archive and the member, and nothing is written. Extraction then runs with
    tarfile's ``data`` filter into a temporary folder beside ``dest_dir``, which is renamed
    into place once complete. Extracted files are read-only: raw data are never edited.
    Returns the extracted regular files, sorted.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    if dest_dir.exists() and (not dest_dir.is_dir() or any(dest_dir.iterdir())):
        raise ArchiveError(f"{archive}: destination {dest_dir} already exists and is not an empty folder")
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            _check_members(archive, members)
            if not any(member.isfile() for member in members):
                raise ArchiveError(f"{archive}: holds no files")
            dest_dir.parent.mkdir(parents=True, exist_ok=True)
            progress(f"{archive.name}: extracting {len(members)} members into {dest_dir}")
            tmp = Path(tempfile.mkdtemp(prefix=f".{dest_dir.name}.", suffix=".tmp", dir=dest_dir.parent))
            try:
                tar.extractall(tmp, members=members, filter="data")
                files = _make_read_only(tmp)
                tmp.chmod(0o755)  # mkdtemp's 0o700 would hide the raw data from other users
                if dest_dir.exists():
                    dest_dir.rmdir()
                tmp.rename(dest_dir)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp)
    except tarfile.FilterError as error:
        # The checks above should catch everything the filter does; this is the second line.
        raise UnsafeArchiveError(archive, error.tarinfo.name, str(error)) from error
    except (tarfile.TarError, EOFError) as error:
        raise ArchiveError(f"{archive}: cannot be read as a tar archive ({error})") from error
    progress(f"{archive.name}: extracted {len(files)} files into {dest_dir}")
    return sorted(dest_dir / path.relative_to(tmp) for path in files)


def _check_members(archive: Path, members: list[tarfile.TarInfo]) -> None:
    """Raise :class:`UnsafeArchiveError` for the first member that could escape or is special.

    Paths are judged by their text alone, which is exact only if no path passes through a
    symbolic link of the archive: such paths are refused too (IXI's tars hold no links at all).
    """
    links = {str(PurePosixPath(member.name)) for member in members if member.issym()}
    for member in members:
        name = PurePosixPath(member.name)
        if name.is_absolute():
            raise UnsafeArchiveError(archive, member.name, "absolute path")
        if ".." in name.parts:
            raise UnsafeArchiveError(archive, member.name, "path contains '..'")
        through = [str(parent) for parent in name.parents if str(parent) in links]
        if through:
            raise UnsafeArchiveError(archive, member.name, f"path goes through the symbolic link '{through[0]}'")
        if member.issym():
            # A symbolic link's target is relative to the folder holding the link.
            _check_link(archive, member, name.parent / member.linkname, "symbolic", links)
        elif member.islnk():
            # A hard link's target is a member name, relative to the archive's root.
            _check_link(archive, member, PurePosixPath(member.linkname), "hard", links)
        elif not (member.isfile() or member.isdir()):
            kind = "FIFO" if member.isfifo() else "device" if member.isdev() else "special"
            raise UnsafeArchiveError(archive, member.name, f"{kind} file")


def _check_link(
    archive: Path, member: tarfile.TarInfo, target: PurePosixPath, kind: str, links: set[str]
) -> None:
    """Refuse a link whose target is absolute, leaves the folder, or passes through a link."""
    if PurePosixPath(member.linkname).is_absolute():
        raise UnsafeArchiveError(archive, member.name, f"{kind} link to absolute path '{member.linkname}'")
    resolved: list[str] = []
    for i, part in enumerate(target.parts):
        if part == "..":
            if not resolved:
                raise UnsafeArchiveError(
                    archive, member.name, f"{kind} link to '{member.linkname}' points outside the folder"
                )
            resolved.pop()
        else:
            resolved.append(part)
        if "/".join(resolved) in links and i < len(target.parts) - 1:
            raise UnsafeArchiveError(
                archive, member.name, f"{kind} link to '{member.linkname}' goes through a symbolic link"
            )


def _make_read_only(root: Path) -> list[Path]:
    """Make every regular file under ``root`` read-only (0o444); return them."""
    files = []
    for folder, _, names in os.walk(root):
        for file_name in names:
            path = Path(folder) / file_name
            if stat.S_ISREG(path.lstat().st_mode):
                path.chmod(0o444)
                files.append(path)
    return files


def prepare_raw(
    archives: Mapping[str, Path], raw_dir: Path, progress: Callable[[str], None] = print
) -> Path:
    """Extract each modality's archive (keys T1, PD, MRA) into ``raw_dir/IXI-<key>``; return raw_dir.

    A modality whose folder already exists is skipped: extraction renames a complete folder into
    place, so an existing one is a finished extraction.
    """
    raw_dir = Path(raw_dir)
    unknown = sorted(set(archives) - set(MODALITIES))
    if unknown:
        raise ArchiveError(f"unknown modality {unknown} for archives; IXI has {list(MODALITIES)}")
    for modality, archive in archives.items():
        target = raw_dir / f"IXI-{modality}"
        if target.is_dir() and any(target.iterdir()):
            progress(f"{target}: already extracted, skipping {Path(archive).name}")
            continue
        extract_archive(Path(archive), target, progress)
    return raw_dir
