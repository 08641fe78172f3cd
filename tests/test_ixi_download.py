"""Downloads that cannot hang and never call unchecked data verified, against a server on 127.0.0.1.

A regression here would loop or wait forever, so every test carries a timeout of its own.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

from brainage.ixi import DownloadError, download, part_path
from http_server import Served
from test_ixi import FAST, quiet, serve

pytestmark = pytest.mark.timeout(10)


def test_server_ignoring_range_and_dropping_every_connection_gives_up(server: Served, tmp_path: Path) -> None:
    """Every attempt starts at byte 0 and ends at the same byte: no attempt gets further, so retries run out."""
    data, md5 = serve(server, "IXI-T1.tar")
    server.ignore_range, server.cut_every = True, 30_000
    url = f"{server.url}/files/IXI-T1.tar"
    dest = tmp_path / "IXI-T1.tar"
    with pytest.raises(DownloadError) as caught:
        download(url, dest, md5, len(data), retries=2, progress=quiet, **FAST)
    message = str(caught.value)
    assert message.startswith(f"{url}: giving up after 3 failed attempts in a row to download {dest}")
    assert "reaching no further than byte 30000 of 100000" in message
    assert "connection closed after 30000 of 100000 bytes" in message
    assert len(server.requests) == 3
    assert not dest.exists() and part_path(dest).stat().st_size == 30_000


def test_server_dropping_every_connection_but_resuming_still_finishes(server: Served, tmp_path: Path) -> None:
    """Kept behaviour: each attempt that gets further restarts the count, so a flaky server still finishes."""
    data, md5 = serve(server, "IXI-PD.tar")
    server.cut_every = 30_000
    url = f"{server.url}/files/IXI-PD.tar"
    dest = download(url, tmp_path / "IXI-PD.tar", md5, len(data), retries=1, progress=quiet, **FAST)
    assert dest.read_bytes() == data
    assert [header for _, header in server.requests] == [None, "bytes=30000-", "bytes=60000-", "bytes=90000-"]


def test_trickling_server_is_given_up_as_too_slow(server: Served, tmp_path: Path) -> None:
    """A byte every 50 ms keeps the socket alive forever; the minimum throughput ends each attempt."""
    data, md5 = serve(server, "IXI-MRA.tar", n_bytes=100)
    server.trickle_s = 0.05
    url = f"{server.url}/files/IXI-MRA.tar"
    dest = tmp_path / "IXI-MRA.tar"
    with pytest.raises(DownloadError) as caught:
        download(url, dest, md5, len(data), retries=1, min_bytes_per_s=100, slow_window_s=0.3, progress=quiet, **FAST)
    message = str(caught.value)
    assert message.startswith(f"{url}: giving up after 2 failed attempts in a row to download {dest}")
    assert re.search(r"too slow: \d+ bytes in the last 0\.\d s, below the minimum of 100 bytes/s", message)
    assert len(server.requests) == 2
    assert not dest.exists() and 0 < part_path(dest).stat().st_size < len(data)


@pytest.mark.parametrize(
    ("with_size", "checked"),
    [(False, "nothing was checked"), (True, "only its size (5000 bytes) was checked")],
    ids=["no-md5-no-size", "size-only"],
)
def test_download_without_md5_is_never_called_verified(
    server: Served, tmp_path: Path, with_size: bool, checked: str
) -> None:
    data, _ = serve(server, "IXI.xls", n_bytes=5000)
    url = f"{server.url}/files/IXI.xls"
    dest = tmp_path / "IXI.xls"
    size = len(data) if with_size else None
    for _ in range(2):  # the download, then the rerun that finds the file in place
        lines: list[str] = []
        with pytest.warns(UserWarning, match=re.escape(f"{dest}: no MD5 known, {checked}")):
            download(url, dest, None, size, progress=lines.append, **FAST)
        assert lines and not any("verified" in line for line in lines)
    assert dest.read_bytes() == data
    assert len(server.requests) == 1


def test_download_with_md5_says_md5_verified_and_warns_nothing(server: Served, tmp_path: Path) -> None:
    data, md5 = serve(server, "IXI.xls", n_bytes=5000)
    url = f"{server.url}/files/IXI.xls"
    dest = tmp_path / "IXI.xls"
    for expected in ("IXI.xls: done, 0.0 MB, MD5 verified", "IXI.xls: already downloaded, 0.0 MB, MD5 verified"):
        lines: list[str] = []
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            download(url, dest, md5, len(data), progress=lines.append, **FAST)
        assert lines[-1] == expected
