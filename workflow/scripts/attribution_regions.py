"""The regions every run's attribution is summarized over, once per study."""

from pathlib import Path

from brainage.attribution import RegionOutputs, study_regions
from brainage.io import read_table
from brainage.logs import log_to_file

log = log_to_file(snakemake.log[0])
params = snakemake.params
study_regions(
    read_table(snakemake.input.manifest),
    read_table(snakemake.input.split),
    grid=params.grid,
    template_space=params.template,
    outputs=RegionOutputs(**{name: Path(path) for name, path in snakemake.output.items()}),
    atlas=params.atlas,
    synthetic_scale=params.synthetic_scale,
    seed=params.seed,
    log=log.info,
)
