"""Fit the classical baseline of one modality (brainage.baseline): PCA and ridge, chosen on tune."""

from pathlib import Path

from brainage.baseline import BaselineOutputs, baseline_run
from brainage.io import read_table
from brainage.logs import log_to_file

log = log_to_file(snakemake.log[0])
baseline_run(
    read_table(snakemake.input.manifest),
    read_table(snakemake.input.split),
    channels=snakemake.params.channels,
    params=snakemake.params.model_params,
    outputs=BaselineOutputs(**{name: Path(path) for name, path in snakemake.output.items()}),
    threads=snakemake.threads,
    log=log.info,
)
