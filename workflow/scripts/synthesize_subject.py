"""Generate one synthetic subject's raw images and ground truth."""

from pathlib import Path

from brainage import synth
from brainage.logs import log_to_file

log = log_to_file(snakemake.log[0])
out = Path(snakemake.output[0])
params = snakemake.params
synth.synthesize_subject(params.row, out, Path(params.truth), params.scale, params.seed)
log.info("synthesized %s into %s", snakemake.wildcards.subject, out)
