"""The subject's QC figure and its row of QC numbers."""

from pathlib import Path

from brainage.io import write_json
from brainage.logs import log_to_file
from brainage.qc import qc_subject

log = log_to_file(snakemake.log[0])
inputs = snakemake.input
row = qc_subject(
    snakemake.wildcards.subject,
    pd=Path(inputs.pd),
    t1_reg=Path(inputs.t1),
    tof_reg=Path(inputs.tof),
    tof_bin=Path(inputs.tof_bin),
    brain_mask=Path(inputs.mask),
    registration_json=Path(inputs.summary),
    png=Path(snakemake.output.png),
    truth_json=Path(inputs.truth[0]) if inputs.truth else None,
)
write_json(row, snakemake.output.numbers)
log.info("QC: %s", row)
