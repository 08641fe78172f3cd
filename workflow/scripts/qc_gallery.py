"""Every included subject's registered TOF MIP on one page."""

from pathlib import Path

from brainage.io import read_table
from brainage.logs import log_to_file
from brainage.qc import qc_gallery

log_to_file(snakemake.log[0])
ages = read_table(snakemake.input.inventory).set_index("subject")["age"]
paths = [Path(path) for path in snakemake.input.tof]
subjects = [path.parent.name for path in paths]
qc_gallery(subjects, paths, [f"{ages[subject]:.0f} y" for subject in subjects], Path(snakemake.output[0]))
