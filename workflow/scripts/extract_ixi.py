"""Extract the IXI archives into IXI-T1/, IXI-PD/, IXI-MRA/, refusing unsafe members."""

from pathlib import Path

from brainage.ixi import prepare_raw
from brainage.logs import log_to_file

log = log_to_file(snakemake.log[0])
archives = {modality: Path(snakemake.input[modality]) for modality in ("T1", "PD", "MRA")}
prepare_raw(archives, Path(snakemake.output[0]), progress=log.info)
