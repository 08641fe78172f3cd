"""Lay the synthetic subjects out like the IXI download, and write IXI.xls beside it."""

from pathlib import Path

from brainage import synth
from brainage.logs import log_to_file

log = log_to_file(snakemake.log[0])
count = synth.assemble_dataset(
    [Path(folder) for folder in snakemake.input.subjects], Path(snakemake.output.raw)
)
synth.write_demographics(snakemake.params.plan, Path(snakemake.output.sheet), snakemake.params.seed)
synth.write_ground_truth_table(snakemake.params.plan, Path(snakemake.output.truth))
log.info("assembled %d images into %s", count, snakemake.output.raw)
