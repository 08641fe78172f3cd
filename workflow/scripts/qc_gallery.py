"""Every included subject's registered TOF MIP on one page."""

from pathlib import Path

from brainage.io import read_table
from brainage.logs import log_to_file
from brainage.plots import plot_qc_gallery

log_to_file(snakemake.log[0])
ages = read_table(snakemake.input.inventory).set_index("subject")["age"]
subjects = snakemake.params.subjects
plot_qc_gallery(
    subjects,
    [Path(path) for path in snakemake.input.tof],
    [f"{ages[subject]:.0f} y" for subject in subjects],
    Path(snakemake.output[0]),
)
