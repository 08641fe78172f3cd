"""Binarize the registered TOF into a vessel mask."""

from pathlib import Path

from brainage.binarize import binarize_subject
from brainage.logs import log_to_file

log = log_to_file(snakemake.log[0])
stats = binarize_subject(
    snakemake.wildcards.subject,
    tof_reg=Path(snakemake.input.tof),
    brain_mask=Path(snakemake.input.mask),
    out=Path(snakemake.output[0]),
    method=snakemake.params.method,
    percentile=snakemake.params.percentile,
    min_component_voxels=snakemake.params.min_component_voxels,
)
log.info("vessel mask: %s", stats)
