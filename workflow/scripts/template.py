"""Prepare the registration template once, at the training grid's spacing."""

from pathlib import Path

from brainage.logs import log_to_file
from brainage.registration import prepare_template

log_to_file(snakemake.log[0])
prepare_template(snakemake.params.spacing, Path(snakemake.output.t1), Path(snakemake.output.mask))
