"""The youngest and the oldest included subject's raw images, side by side."""

from pathlib import Path

from brainage.io import read_table
from brainage.logs import log_to_file
from brainage.plots import plot_youngest_and_oldest

log_to_file(snakemake.log[0])
plot_youngest_and_oldest(read_table(snakemake.input.inventory), Path(snakemake.output[0]))
