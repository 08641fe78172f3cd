"""Download one IXI file, resuming a partial download, and verify its checksum."""

from pathlib import Path

from brainage.ixi import download
from brainage.logs import log_to_file

log = log_to_file(snakemake.log[0])
entry = snakemake.params.entry
download(entry.url, Path(snakemake.output[0]), entry.md5, entry.size_bytes, progress=log.info)
