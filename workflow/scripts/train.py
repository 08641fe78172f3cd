"""Train one (modality, model) run; resumes from its last checkpoint after an interruption."""

from pathlib import Path

from brainage.io import read_table
from brainage.logs import log_to_file
from brainage.train import RunOutputs, train_run

log = log_to_file(snakemake.log[0])
params = snakemake.params
train_run(
    read_table(snakemake.input.manifest),
    read_table(snakemake.input.split),
    channels=params.channels,
    model_name=snakemake.wildcards.model,
    model_params=params.model_params,
    training=params.training,
    outputs=RunOutputs(**{name: Path(path) for name, path in snakemake.output.items()}),
    checkpoint=Path(params.checkpoint),
    threads=snakemake.threads,
    seed=params.seed,
    device=params.training["device"],
    log=log.info,
)
