"""Lay the synthetic subjects out like the IXI download, and write IXI.xls beside it."""

from pathlib import Path

from brainage import synth
from brainage.logs import log_to_file

log = log_to_file(snakemake.log[0])
plan = snakemake.params.plan
imaged = plan[plan["imaged"]].to_dict("records")
count = synth.assemble_dataset(
    {row["subject"]: Path(folder) for row, folder in zip(imaged, snakemake.input.subjects, strict=True)},
    plan,
    Path(snakemake.output.raw),
)
synth.write_demographics(plan, Path(snakemake.output.sheet), snakemake.params.seed)
synth.write_ground_truth_table(plan, Path(snakemake.output.truth))
log.info("assembled %d images into %s", count, snakemake.output.raw)
