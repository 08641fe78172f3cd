"""Getting the real IXI study onto disk: download the official files, verify them, unpack them.

The IXI tars are several gigabytes each on a server that drops connections, so
:func:`download` resumes a partial file with HTTP range requests and verifies size and MD5
before the file appears under its final name: a file under its final name is always whole.
:func:`extract_archive` checks every member of a tar before writing anything and unpacks into
a temporary folder that is renamed into place, so the raw folder is either complete or absent.
:func:`extract_ixi` checks every archive against the file table first, because an archive that
was already in the download folder never went through :func:`download`'s checks.

``brainage.io.atomic_path`` does not fit here: a download must keep a predictable ``.part``
name to resume from, and an extraction renames a whole folder, not one file.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import posixpath
import re
import shutil
import stat
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pandas as pd

from brainage.config import ConfigError
from brainage.paths import IXI_IMAGE_NAME, ixi_folder
from brainage.vocabulary import RAW_SCANS

FILE_TABLE_COLUMNS = ["name", "url", "md5", "size_bytes", "note"]

# Often enough to show a multi-gigabyte download is alive, rarely enough to keep logs short.
PROGRESS_INTERVAL_S = 10.0
USER_AGENT = "brainage-ixi-downloader"
_MD5_PATTERN = re.compile(r"[0-9a-f]{32}")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes \*/(\d+)")
_MB = 1e6
# Written into a raw folder before anything is extracted into it, so that a later run can tell
# the workflow's own folder (which Snakemake deletes before rebuilding it) from a user's.
OWNER_MARKER = ".extracted-by-brainage"
# Every complete tar ends with two zero blocks; tarfile reads a tar cut off between two members
# as a complete, shorter one, so their absence is the only sign of the cut.
_END_OF_ARCHIVE = bytes(2 * tarfile.BLOCKSIZE)
# mkdtemp's staging folder name is this much longer than the destination's: ".", ".xxxxxxxx.tmp".
_STAGING_EXTRA_BYTES = 14


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


class ArchiveMemberError(ArchiveError):
    """A tar archive with a member that cannot be extracted as it is; names archive and member."""

    def __init__(self, archive: Path, member: str, reason: str) -> None:
        self.archive = archive
        self.member = member
        super().__init__(f"{archive}: refusing to extract member '{member}': {reason}")


class UnsafeArchiveError(ArchiveMemberError):
    """A tar archive with a member that would write outside its folder or create a device."""


class _TransientError(Exception):
    """A network failure worth retrying: the next attempt resumes from the partial file.

    ``too_slow`` marks an attempt ended for its low throughput: it counts as a failure however
    far it got, or a server trickling a few bytes per attempt would be retried forever.
    """

    def __init__(self, message: str, too_slow: bool = False) -> None:
        self.message = message
        self.too_slow = too_slow
        super().__init__(message)


@dataclass(frozen=True)
class _SpeedLimit:
    """The least average throughput an attempt must keep over each window of ``window_s`` seconds.

    The socket timeout alone cannot catch a stall: a byte every few seconds keeps each read alive.
    """

    min_bytes_per_s: float
    window_s: float

    def check(self, n_bytes: int, elapsed_s: float) -> None:
        """Raise a too-slow :class:`_TransientError` if ``n_bytes`` in ``elapsed_s`` fall short."""
        if n_bytes < self.min_bytes_per_s * elapsed_s:
            raise _TransientError(
                f"too slow: {n_bytes} bytes in the last {elapsed_s:.1f} s, "
                f"below the minimum of {self.min_bytes_per_s:g} bytes/s",
                too_slow=True,
            )


@dataclass(frozen=True)
class FileEntry:
    """One downloadable file; ``size_bytes`` is None when unknown, the MD5 is always known."""

    name: str
    url: str
    md5: str
    size_bytes: int | None
    note: str = ""


# ---------------------------------------------------------------------------------------------
# The file table


def read_file_table(path: Path) -> pd.DataFrame:
    """Read ``resources/ixi_files.tsv``: one row per file, columns name, url, md5, size_bytes, note.

    Every cell is kept as text (an empty cell is ""), so a checksum is never read as a number.
    Malformed rows raise :class:`FileTableError` naming the file and the row's name; a row without
    an MD5 is malformed, since a file that cannot be verified must never be used.
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
        if not row.md5:
            raise FileTableError(f"{path}: {row.name}: md5 is missing: a file without one could not be verified")
        if not _MD5_PATTERN.fullmatch(row.md5):
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
    md5 = row["md5"]
    # An empty override is refused below, like any other malformed one: it must not unset the MD5.
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
    min_bytes_per_s: float = 50_000.0,
    slow_window_s: float = 300.0,
    progress: Callable[[str], None] = print,
    chunk_bytes: int = 1 << 20,
) -> Path:
    """Download ``url`` to ``dest``, resuming an earlier partial download; return ``dest``.

    The data go to ``dest.part``; an existing ``.part`` is continued with a ``Range`` request
    (a server that answers 200 instead of 206 makes it start over). Connection errors, short
    reads and stalls are retried up to ``retries`` failed attempts in a row, waiting
    ``backoff_s``, then twice as long each time. Only an attempt that leaves the partial file
    longer than any attempt before restarts that count, so a server that starts over at byte 0
    and never gets further runs out of retries. An attempt averaging under ``min_bytes_per_s``
    over any ``slow_window_s`` (curl's ``--speed-limit`` and ``--speed-time``) is ended and
    counts as failed however far it got; the defaults give up on a server that stays below
    50 kB/s (three days for IXI's 12 GB MRA tar) for half an hour.

    Size (when known) and MD5 (when given) are checked before ``.part`` is renamed to ``dest``;
    a mismatch deletes the ``.part`` alone, so a rerun starts clean, and raises
    :class:`DownloadError` (:class:`ChecksumError` for the MD5). Without an MD5 the file is
    not verified, and a ``UserWarning`` says so. If ``dest`` already holds the expected file,
    nothing is downloaded.
    """
    dest = Path(dest)
    md5 = md5.lower() if md5 else None
    if dest.is_file() and _matches(dest, md5, size, chunk_bytes):
        _report_checks(dest, "already downloaded", md5, size, progress)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    digest = _PartDigest()
    digest.sync(part, chunk_bytes)
    speed_limit = _SpeedLimit(min_bytes_per_s, slow_window_s)
    best = digest.n_bytes
    failures = 0
    while True:
        try:
            _attempt(url, part, digest, size, timeout_s, speed_limit, progress, chunk_bytes)
            break
        except _TransientError as error:
            # Getting further than ever before restarts the count, so a flaky server that cuts
            # every few hundred megabytes still finishes a 12 GB file; anything else, such as a
            # restart from byte 0 that ends where the last one did, brings the end nearer.
            got_further = digest.n_bytes > best and not error.too_slow
            failures = 1 if got_further else failures + 1
            best = max(best, digest.n_bytes)
            if failures > retries:
                of_size = f" of {size}" if size is not None else ""
                raise DownloadError(
                    f"{url}: giving up after {failures} failed attempts in a row to download {dest}, "
                    f"reaching no further than byte {best}{of_size} (last: {error.message}); {part} is "
                    "kept so that a rerun resumes it"
                ) from None
            wait = backoff_s * 2 ** (failures - 1)
            progress(f"{dest.name}: {error.message}; retrying in {wait:.1f} s")
            time.sleep(wait)
    _verify_part(part, dest, digest, md5, size, chunk_bytes)
    os.replace(part, dest)
    _report_checks(dest, "done", md5, size, progress)
    return dest


def _report_checks(dest: Path, what: str, md5: str | None, size: int | None, progress: Callable[[str], None]) -> None:
    """Say that ``dest`` is in place and what it was checked against; warn if not by MD5.

    Only an MD5 verifies the content: a file checked by size alone, or not at all, is never
    called verified, and the warning reaches the job's log through ``brainage.logs``.
    """
    line = f"{dest.name}: {what}, {dest.stat().st_size / _MB:.1f} MB"
    if md5 is not None:
        progress(f"{line}, MD5 verified")
        return
    progress(line)
    checked = f"only its size ({size} bytes) was checked" if size is not None else "nothing was checked"
    # stacklevel 3: the warning names the caller of download, not this module.
    warnings.warn(f"{dest}: no MD5 known, {checked}: the file is not verified", stacklevel=3)


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
    speed_limit: _SpeedLimit,
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
        raise _TransientError(f"cannot connect to {url} ({type(error).__name__}: {error})") from None
    with response:
        offset, total = _resume_point(response, url, part, digest, offset, progress)
        if size is not None and total is not None and total != size:
            raise DownloadError(f"{url}: server has {total} bytes, expected {size}")
        expected = size if size is not None else total
        received = _stream(response, part, digest, expected, speed_limit, progress, chunk_bytes)
    if expected is not None and offset + received < expected:
        raise _TransientError(f"connection closed after {offset + received} of {expected} bytes")


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
        raise _TransientError(f"partial file is longer than the server's {match[1]} bytes; starting over")
    if error.code >= 500 or error.code == 429:
        raise _TransientError(f"HTTP {error.code} {error.reason} from {url}")
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
                f"server answered range {offset}- with '{response.headers.get('Content-Range')}'; starting over"
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
    speed_limit: _SpeedLimit,
    progress: Callable[[str], None],
    chunk_bytes: int,
) -> int:
    """Append the response body to ``part`` and the running MD5; return the bytes received.

    Raises a too-slow :class:`_TransientError` at the end of a window of ``speed_limit`` below
    its minimum; the bytes received until then stay in ``part``.
    """
    received = window_bytes = 0
    started = last_report = window_start = time.monotonic()
    with open(part, "ab") as stream:
        while True:
            try:
                # read1 returns what has arrived; read waits for a whole chunk, which a trickling
                # server can keep it doing for ever, out of reach of the speed check below.
                chunk = response.read1(chunk_bytes)
            except (OSError, http.client.HTTPException) as error:
                raise _TransientError(f"connection lost ({type(error).__name__}: {error})") from None
            if not chunk:
                break
            stream.write(chunk)
            digest.update(chunk)
            received += len(chunk)
            window_bytes += len(chunk)
            now = time.monotonic()
            if now - window_start >= speed_limit.window_s:
                speed_limit.check(window_bytes, now - window_start)
                window_start, window_bytes = now, 0
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


def extract_archive(
    archive: Path, dest_dir: Path, progress: Callable[[str], None] = print, scan: str | None = None
) -> list[Path]:
    """Extract the tar ``archive`` into ``dest_dir`` (which must not exist or be empty).

    :func:`check_archive` runs first: any member or destination it refuses raises
    :class:`ArchiveError` naming the archive (and the member), and nothing is written.
    Extraction then runs with tarfile's ``data`` filter into a temporary folder beside
    ``dest_dir``, which is renamed into place once complete. Extracted files are read-only:
    raw data are never edited. Returns the extracted regular files, sorted.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    with _tar_errors(archive, dest_dir), tarfile.open(archive) as tar:
        members = _checked_members(archive, tar, dest_dir, scan)
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
    progress(f"{archive.name}: extracted {len(files)} files into {dest_dir}")
    return sorted(dest_dir / path.relative_to(tmp) for path in files)


def check_archive(archive: Path, dest_dir: Path, scan: str | None = None) -> None:
    """Everything :func:`extract_archive` checks before writing, without writing anything.

    So several archives can all be checked before any is extracted. Refused: a destination that
    is, or passes through, a symbolic link or a file, or is a folder that is not empty; a tar
    without its end-of-archive marker (cut off); a member that could escape the folder, is a
    special file, a hard link to no earlier file, a second copy of a name, or a name longer than
    the file system holds; with ``scan``, a member that is not an IXI image of it.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    with _tar_errors(archive, dest_dir), tarfile.open(archive) as tar:
        _checked_members(archive, tar, dest_dir, scan)


@contextlib.contextmanager
def _tar_errors(archive: Path, dest_dir: Path) -> Iterator[None]:
    """Turn tarfile's and the file system's errors into :class:`ArchiveError` naming the archive."""
    try:
        yield
    except tarfile.FilterError as error:
        # The checks should catch everything the filter does; this is the second line.
        raise UnsafeArchiveError(archive, error.tarinfo.name, str(error)) from error
    except (tarfile.TarError, EOFError) as error:
        raise ArchiveError(f"{archive}: cannot be read as a tar archive ({error})") from error
    except OSError as error:
        raise ArchiveError(f"{archive}: cannot be extracted into {dest_dir} ({error})") from error


def _checked_members(archive: Path, tar: tarfile.TarFile, dest_dir: Path, scan: str | None) -> list[tarfile.TarInfo]:
    """The archive's members once :func:`check_archive`'s checks pass."""
    _check_destination(archive, dest_dir)
    members = tar.getmembers()
    _check_complete(archive, tar, members)
    _check_members(archive, members)
    _check_name_lengths(archive, members, dest_dir)
    if scan is not None:
        _check_ixi_names(archive, members, scan)
    if not any(member.isfile() for member in members):
        raise ArchiveError(f"{archive}: holds no files")
    return members


def _check_destination(archive: Path, dest_dir: Path) -> None:
    """Refuse a destination that is not a new or empty folder reached without symbolic links.

    A link anywhere in the path as given would put the raw data somewhere the path does not
    say; only the path's own components are checked, so a relative path is judged below the
    working directory alone.
    """
    for path in (dest_dir, *dest_dir.parents):
        if path.is_symlink():
            raise ArchiveError(f"{archive}: destination {dest_dir}: {path} is a symbolic link")
        if path.exists() and not path.is_dir():
            raise ArchiveError(f"{archive}: destination {dest_dir}: {path} is a file, not a folder")
    if dest_dir.exists() and any(dest_dir.iterdir()):
        raise ArchiveError(f"{archive}: destination {dest_dir} already exists and is not an empty folder")


def _check_complete(archive: Path, tar: tarfile.TarFile, members: list[tarfile.TarInfo]) -> None:
    """Refuse a tar whose member list does not end with the end-of-archive marker."""
    tar.fileobj.seek(tar.offset)
    if tar.fileobj.read(len(_END_OF_ARCHIVE)) != _END_OF_ARCHIVE:
        last = f"after member '{members[-1].name}'" if members else "at its start"
        raise ArchiveError(
            f"{archive}: no end-of-archive marker {last}: the file is cut off (an incomplete copy?); "
            "nothing was extracted"
        )


def _check_members(archive: Path, members: list[tarfile.TarInfo]) -> None:
    """Raise :class:`ArchiveMemberError` for the first member that could escape, is special,
    repeats a name, or is a hard link to no earlier file.

    Paths are judged by their text alone, which is exact only if no path passes through a
    symbolic link of the archive: such paths are refused too (IXI's tars hold no links at all).
    A repeated name would silently replace the earlier copy; tarfile resolves a hard link only
    to a file before it, and otherwise fails mid-extraction with a bare KeyError.
    """
    links = {str(PurePosixPath(member.name)) for member in members if member.issym()}
    seen: set[str] = set()
    files: set[str] = set()
    for member in members:
        name = PurePosixPath(member.name)
        if name.is_absolute():
            raise UnsafeArchiveError(archive, member.name, "absolute path")
        if ".." in name.parts:
            raise UnsafeArchiveError(archive, member.name, "path contains '..'")
        if str(name) in seen:
            raise ArchiveMemberError(archive, member.name, "appears twice; the second copy would replace the first")
        seen.add(str(name))
        through = [str(parent) for parent in name.parents if str(parent) in links]
        if through:
            raise UnsafeArchiveError(archive, member.name, f"path goes through the symbolic link '{through[0]}'")
        if member.issym():
            # A symbolic link's target is relative to the folder holding the link.
            _check_link(archive, member, name.parent / member.linkname, "symbolic", links)
        elif member.islnk():
            # A hard link's target is a member name, relative to the archive's root.
            _check_link(archive, member, PurePosixPath(member.linkname), "hard", links)
            if posixpath.normpath(member.linkname) not in files:
                reason = f"hard link to '{member.linkname}', which is not an earlier file of the archive"
                raise ArchiveMemberError(archive, member.name, reason)
        elif not (member.isfile() or member.isdir()):
            kind = "FIFO" if member.isfifo() else "device" if member.isdev() else "special"
            raise UnsafeArchiveError(archive, member.name, f"{kind} file")
        if member.isfile() or member.islnk():
            files.add(str(name))


def _check_link(archive: Path, member: tarfile.TarInfo, target: PurePosixPath, kind: str, links: set[str]) -> None:
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


def _check_name_lengths(archive: Path, members: list[tarfile.TarInfo], dest_dir: Path) -> None:
    """Refuse a member name the file system cannot hold under ``dest_dir``.

    Mid-extraction such a name fails with a bare OSError (or a RecursionError for a deep path)
    that names neither the archive nor the member.
    """
    absolute = dest_dir.absolute()
    anchor = next(path for path in (absolute, *absolute.parents) if path.is_dir())
    name_max = os.pathconf(anchor, "PC_NAME_MAX")
    # Members go into a staging folder beside dest_dir with a longer name; the "/" before the
    # member's name and the terminating NUL count towards PATH_MAX too.
    room = os.pathconf(anchor, "PC_PATH_MAX") - len(os.fsencode(absolute)) - _STAGING_EXTRA_BYTES - 2
    for member in members:
        components = PurePosixPath(member.name).parts
        if len(os.fsencode(member.name)) > room or any(len(os.fsencode(part)) > name_max for part in components):
            raise ArchiveMemberError(
                archive,
                member.name,
                f"name is longer than the file system allows under {dest_dir} "
                f"({name_max} bytes a component, {room} bytes in all)",
            )


def _check_ixi_names(archive: Path, members: list[tarfile.TarInfo], scan: str) -> None:
    """Refuse a member that is not an IXI image of ``scan`` (folders aside).

    A mislabelled or foreign archive would otherwise be extracted, and its files silently
    ignored or filed under the wrong scan by the inventory.
    """
    for member in members:
        match = IXI_IMAGE_NAME.fullmatch(PurePosixPath(member.name).name)
        if not member.isdir() and (match is None or match["scan"] != scan):
            raise ArchiveMemberError(
                archive, member.name, f"not an IXI {scan} image (IXI###-<site>-####-{scan}.nii.gz)"
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


def prepare_raw(archives: Mapping[str, Path], raw_dir: Path, progress: Callable[[str], None] = print) -> Path:
    """Extract each scan's archive (keys: :data:`brainage.vocabulary.RAW_SCANS`) into its
    :func:`brainage.paths.ixi_folder` under ``raw_dir``; return raw_dir.

    Every archive is checked (:func:`check_archive`, with its scan's file names) before any
    is extracted, so one bad archive leaves none of the others extracted. A scan whose folder
    already exists is skipped: extraction renames a complete folder into place, so an existing
    one is a finished extraction.
    """
    raw_dir = Path(raw_dir)
    unknown = sorted(set(archives) - set(RAW_SCANS))
    if unknown:
        raise ArchiveError(f"unknown scan {unknown} for archives; IXI has {list(RAW_SCANS)}")
    pending: dict[str, Path] = {}
    for scan, archive in archives.items():
        target = raw_dir / ixi_folder(scan)
        if target.is_dir() and any(target.iterdir()):
            progress(f"{target}: already extracted, skipping {Path(archive).name}")
        else:
            pending[scan] = Path(archive)
    for scan, archive in pending.items():
        check_archive(archive, raw_dir / ixi_folder(scan), scan)
    for scan, archive in pending.items():
        extract_archive(archive, raw_dir / ixi_folder(scan), progress, scan)
    return raw_dir


def extract_ixi(
    archives: Mapping[str, Path],
    entries: Mapping[str, FileEntry],
    raw_dir: Path,
    progress: Callable[[str], None] = print,
) -> Path:
    """Verify the downloaded archives against their file-table ``entries``, then :func:`prepare_raw`.

    An archive that was already in the download folder never went through :func:`download`'s
    checks (Snakemake does not rerun a download whose file exists), so every archive's size and
    MD5 are checked here, all of them before anything is extracted. ``raw_dir`` must be absent,
    empty or the workflow's own; it is marked with :data:`OWNER_MARKER` before anything goes in,
    so that :func:`check_raw_dir` accepts it in later runs, even after an interrupted extraction.
    """
    raw_dir = Path(raw_dir)
    if not _claimable(raw_dir):
        raise ArchiveError(f"{raw_dir}: already holds files this workflow did not extract; nothing was extracted")
    _verify_archives(archives, entries, progress)
    raw_dir.mkdir(parents=True, exist_ok=True)
    (raw_dir / OWNER_MARKER).write_text(
        "Extracted from the IXI archives by the brainage workflow, which deletes and rebuilds this folder.\n"
    )
    return prepare_raw(archives, raw_dir, progress)


def _verify_archives(
    archives: Mapping[str, Path], entries: Mapping[str, FileEntry], progress: Callable[[str], None]
) -> None:
    """Check every archive's size (when known), then every archive's MD5, against its entry.

    Sizes go first: one stat per archive catches a wrong file before minutes of hashing.
    """
    advice = "nothing was extracted: delete the file so that the next run downloads it again"
    for scan, archive in archives.items():
        size, expected = Path(archive).stat().st_size, entries[scan].size_bytes
        if expected is not None and size != expected:
            raise ArchiveError(f"{archive}: {size} bytes, expected {expected}; {advice}")
    for scan, archive in archives.items():
        actual, expected_md5 = md5_file(Path(archive)), entries[scan].md5
        if actual != expected_md5:
            raise ArchiveError(f"{archive}: MD5 mismatch, expected {expected_md5}, got {actual}; {advice}")
        progress(f"{Path(archive).name}: MD5 verified before extraction")


def check_raw_dir(raw_dir: Path, workdir: Path, kept: Sequence[Path]) -> None:
    """Refuse a ``dataset.raw_dir`` the workflow may not extract into; raise :class:`ConfigError`.

    With ``dataset.download`` true the raw folder is the extraction job's output, and Snakemake
    deletes a job's output folder before it reruns the job and after the job fails. So the folder
    must lie inside ``workdir`` (symbolic links resolved), must not hold any of ``kept`` (other
    outputs: results/, the downloads), and must be absent, empty or marked by an earlier
    extraction with :data:`OWNER_MARKER`. A folder elsewhere is for reading, with download false.
    """
    key = "dataset.raw_dir"
    workdir = Path(workdir).resolve()
    resolved = (workdir / raw_dir).resolve()
    if workdir not in resolved.parents:
        raise ConfigError(
            key,
            f"'{raw_dir}' resolves to {resolved}, not inside the working directory {workdir}; with "
            "dataset.download true the archives are extracted into it and Snakemake may delete it: "
            "choose a new folder inside the working directory, or set dataset.download false to read it",
        )
    for path in kept:
        other = (workdir / path).resolve()
        if resolved == other or resolved in other.parents:
            raise ConfigError(
                key, f"'{raw_dir}' would delete {path} with it: Snakemake deletes the raw folder to extract again"
            )
    if not _claimable(workdir / raw_dir):
        raise ConfigError(
            key,
            f"'{raw_dir}' already exists and is not a folder this workflow extracted (it has no {OWNER_MARKER}); "
            "with dataset.download true Snakemake would delete it before extracting: choose a new folder, "
            "or set dataset.download false to read this one",
        )


def _claimable(raw_dir: Path) -> bool:
    """Whether ``raw_dir`` may become (or is) the workflow's raw folder: absent, empty or marked."""
    if not os.path.lexists(raw_dir):
        return True
    if raw_dir.is_symlink() or not raw_dir.is_dir():
        return False
    return (raw_dir / OWNER_MARKER).is_file() or not any(raw_dir.iterdir())
