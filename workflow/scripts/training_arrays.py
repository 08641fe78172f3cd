"""Resample the subject's channels onto the training grid as uncompressed arrays."""

from pathlib import Path

import numpy as np

from brainage.io import read_json
from brainage.logs import log_to_file
from brainage.tensors import make_training_arrays

log = log_to_file(snakemake.log[0])
summary = read_json(snakemake.input.summary)
grid = snakemake.params.grid
# Inputs and outputs are both keyed by channel.
arrays = {channel: Path(path) for channel, path in snakemake.output.items()}
make_training_arrays(
    snakemake.wildcards.subject,
    images={channel: Path(snakemake.input[channel]) for channel in arrays},
    brain_mask=Path(snakemake.input.mask),
    grid_shape=grid["shape"],
    grid_spacing=grid["spacing"],
    arrays=arrays,
    pd_from_template=np.array(summary["PD_from_template"]) if snakemake.params.template else None,
)
log.info("training arrays: %s", arrays)
