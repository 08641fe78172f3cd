"""Runtime and memory per rule, from every job's Snakemake benchmark file."""

from pathlib import Path

from brainage import metrics, plots
from brainage.io import write_table
from brainage.logs import log_to_file

log = log_to_file(snakemake.log[0])
paths = sorted(Path(snakemake.params.folder).glob("*/*.tsv"))
summary = metrics.summarize_benchmarks(metrics.benchmark_table(paths))
write_table(summary, snakemake.output.table)
plots.plot_benchmarks(summary, Path(snakemake.output.figure))
log.info("benchmarks:\n%s", summary.to_string(index=False))
