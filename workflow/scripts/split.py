"""Choose the age-uniform evaluation set and the tune hold-out, by subject id."""

from brainage.io import read_table, write_table
from brainage.logs import log_to_file
from brainage.plots import plot_split
from brainage.split import make_split

log = log_to_file(snakemake.log[0])
params = snakemake.params
split, seeds = make_split(
    read_table(snakemake.input.manifest),
    method=params.method,
    eval_size=params.eval_size,
    tune_size=params.tune_size,
    n_bins=params.age_bins,
    seed=params.seed,
    seeds=range(params.n_seeds),
    balance_by=params.balance_by,
)
write_table(seeds, snakemake.output.seeds)
write_table(split, snakemake.output.split)
plot_split(seeds, split, snakemake.output.figure)
log.info("split sizes: %s", split["set"].value_counts().to_dict())
