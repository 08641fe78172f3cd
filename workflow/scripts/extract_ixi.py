"""Verify the IXI archives against the file table, then extract them into IXI-T1/, IXI-PD/, IXI-MRA/."""

from pathlib import Path

from brainage.ixi import extract_ixi
from brainage.logs import log_to_file

log = log_to_file(snakemake.log[0])
archives = {scan: Path(path) for scan, path in snakemake.input.items()}
extract_ixi(archives, snakemake.params.entries, Path(snakemake.output[0]), progress=log.info)
