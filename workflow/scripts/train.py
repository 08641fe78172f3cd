"""Train one (modality, model) run; resumes from its last checkpoint after an interruption."""

from pathlib import Path

from brainage.io import read_table
from brainage.logs import log_to_file
from brainage.train import train_run

log = log_to_file(snakemake.log[0])
params = snakemake.params
train_run(
    read_table(snakemake.input.manifest),
    read_table(snakemake.input.split),
    channels=params.channels,
    model_name=snakemake.wildcards.model,
    model_params=params.model_params,
    training=params.training,
    out_dir=Path(snakemake.output.weights).parent,
    checkpoint_dir=Path(params.checkpoint_dir),
    threads=snakemake.threads,
    seed=params.seed,
    device=params.training["device"],
    log=log.info,
)
