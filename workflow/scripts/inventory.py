"""Scan the raw images and the demographics (IXI's sheet or a BIDS dataset); check every image; record exclusions."""

from pathlib import Path

from brainage.inventory import build_inventory
from brainage.io import write_table
from brainage.logs import log_to_file

log = log_to_file(snakemake.log[0])
params = snakemake.params
if params.source == "bids":
    from brainage.bids import build_bids_inventory

    subjects, exclusions = build_bids_inventory(
        Path(snakemake.input.raw),
        params.required,
        threads=snakemake.threads,
        age_range=tuple(params.age_range),
        **params.participant_columns,
    )
else:
    subjects, exclusions = build_inventory(
        Path(snakemake.input.raw),
        Path(snakemake.input.sheet),
        params.required,
        threads=snakemake.threads,
        sheet_name=params.sheet_name,
        age_range=tuple(params.age_range),
    )
for row in exclusions.itertuples():
    log.warning("excluded %s: %s", row.subject, row.reason)
write_table(exclusions, snakemake.output.exclusions)
write_table(subjects, snakemake.output.subjects)
log.info("%d subjects included, %d excluded", int(subjects["included"].sum()), len(exclusions))
