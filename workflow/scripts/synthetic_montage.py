"""A young and an old synthetic subject side by side."""

from pathlib import Path

from brainage import synth
from brainage.logs import log_to_file

log_to_file(snakemake.log[0])
synth.plot_montage(Path(snakemake.input.raw), snakemake.params.plan, Path(snakemake.output[0]))
