"""Register T1 and TOF-MRA to the subject's PD image (and PD to the template)."""

from pathlib import Path

from brainage.logs import log_to_file
from brainage.registration import RegistrationOutputs, register_subject
from brainage.vocabulary import MRA, PD, T1

log = log_to_file(snakemake.log[0])
summary = register_subject(
    snakemake.wildcards.subject,
    pd=Path(snakemake.input[PD]),
    t1=Path(snakemake.input[T1]),
    mra=Path(snakemake.input[MRA]),
    outputs=RegistrationOutputs(**{name: Path(path) for name, path in snakemake.output.items()}),
    transform=snakemake.params.transform,
    template=tuple(Path(path) for path in snakemake.input.template) or None,
    threads=snakemake.threads,
    seed=snakemake.params.seed,
)
log.info("registration summary: %s", summary)
