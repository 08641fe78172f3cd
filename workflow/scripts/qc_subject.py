"""The subject's QC figure and its row of QC numbers."""

from pathlib import Path

from brainage.io import write_json
from brainage.logs import log_to_file
from brainage.plots import plot_qc_subject
from brainage.qc import load_subject_images, qc_numbers

log = log_to_file(snakemake.log[0])
inputs = snakemake.input
images = load_subject_images(
    snakemake.wildcards.subject,
    pd=Path(inputs.pd),
    t1_reg=Path(inputs.t1),
    tof_reg=Path(inputs.tof),
    tof_bin=Path(inputs.tof_bin),
    brain_mask=Path(inputs.mask),
)
plot_qc_subject(images, Path(snakemake.output.png))
row = qc_numbers(images, Path(inputs.summary), Path(inputs.truth[0]) if inputs.truth else None)
write_json(row, snakemake.output.numbers)
log.info("QC: %s", row)
