"""Register T1 and TOF-MRA to the subject's PD image (and PD to the template)."""

from pathlib import Path

from brainage.logs import log_to_file
from brainage.registration import register_subject

log = log_to_file(snakemake.log[0])
summary = register_subject(
    snakemake.wildcards.subject,
    pd=Path(snakemake.input.pd),
    t1=Path(snakemake.input.t1),
    mra=Path(snakemake.input.mra),
    out_dir=Path(snakemake.output.pd).parent,
    transform=snakemake.params.transform,
    template=tuple(Path(path) for path in snakemake.input.template) or None,
    threads=snakemake.threads,
    seed=snakemake.params.seed,
)
log.info("registration summary: %s", summary)
