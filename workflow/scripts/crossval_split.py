"""Deal every included subject into age-stratified cross-validation folds; one split file per fold."""

from brainage.io import read_table, write_table
from brainage.logs import log_to_file
from brainage.split import crossval_folds

log = log_to_file(snakemake.log[0])
params = snakemake.params
folds = crossval_folds(read_table(snakemake.input.manifest), params.folds, params.tune_size, params.seed)
for fold, path in enumerate(snakemake.output.splits, start=1):
    split = folds[folds["fold"] == fold].drop(columns="fold")
    write_table(split, path)
    log.info("fold %d: %s", fold, split["set"].value_counts().to_dict())
