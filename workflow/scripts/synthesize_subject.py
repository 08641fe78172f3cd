"""Generate one synthetic subject's raw images and ground truth."""

from pathlib import Path

from brainage import synth
from brainage.logs import log_to_file

log = log_to_file(snakemake.log[0])
out = Path(snakemake.output[0])
synth.synthesize_subject(snakemake.params.row, out, out, snakemake.params.scale, snakemake.params.seed)
log.info("synthesized %s into %s", snakemake.wildcards.subject, out)
