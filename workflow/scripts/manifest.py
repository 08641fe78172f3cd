"""Join the included subjects with their QC numbers and training arrays; gather exclusions."""

import pandas as pd

from brainage.io import read_json, read_table, write_table
from brainage.logs import log_to_file
from brainage.manifest import build_manifest

log = log_to_file(snakemake.log[0])
qc = pd.DataFrame([read_json(path) for path in snakemake.input.qc])
manifest, qc_exclusions = build_manifest(
    read_table(snakemake.input.inventory), qc, snakemake.params.arrays, snakemake.params.qc_bounds
)
exclusions = pd.concat(
    [read_table(snakemake.input.inventory_exclusions).assign(stage="inventory"), qc_exclusions.assign(stage="qc")],
    ignore_index=True,
)
for row in qc_exclusions.itertuples():
    log.warning("excluded %s at QC: %s", row.subject, row.reason)
write_table(qc.sort_values("subject"), snakemake.output.qc_table)
write_table(exclusions, snakemake.output.exclusions)
write_table(manifest, snakemake.output.manifest)
log.info("manifest: %d subjects; %d excluded in all", len(manifest), len(exclusions))
