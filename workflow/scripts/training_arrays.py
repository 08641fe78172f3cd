"""Resample the subject's channels onto the training grid as uncompressed arrays."""

from pathlib import Path

import numpy as np

from brainage.io import read_json
from brainage.logs import log_to_file
from brainage.tensors import make_training_arrays

log = log_to_file(snakemake.log[0])
summary = read_json(snakemake.input.summary)
grid = snakemake.params.grid
paths = make_training_arrays(
    snakemake.wildcards.subject,
    images={"T1": Path(snakemake.input.t1), "TOF": Path(snakemake.input.tof), "TOF_bin": Path(snakemake.input.tof_bin)},
    binary={"TOF_bin"},
    brain_mask=Path(snakemake.input.mask),
    grid_shape=grid["shape"],
    grid_spacing=grid["spacing"],
    out_dir=Path(snakemake.output.T1).parent,
    pd_from_template=np.array(summary["PD_from_template"]) if snakemake.params.template else None,
)
log.info("training arrays: %s", paths)
