"""Out-of-fold predictions for every subject, their metrics and comparisons, and the two designs' power."""

import sys
from pathlib import Path

import pandas as pd

from brainage import metrics, plots
from brainage.io import read_table, write_table
from brainage.logs import log_to_file

log = log_to_file(snakemake.log[0])
params = snakemake.params
output = snakemake.output
predictions = zip(params.fold_runs, snakemake.input.predictions, strict=True)
fold_tables = {tuple(run): read_table(path) for run, path in predictions}
runs = list(dict.fromkeys((modality, model) for _, modality, model in fold_tables))
out_of_fold = {
    run: metrics.out_of_fold({fold: table for (fold, *key), table in fold_tables.items() if tuple(key) == run})
    for run in runs
}
table = metrics.crossval_table(out_of_fold, n_resamples=params.bootstrap_resamples, seed=params.seed)
comparisons = metrics.paired_comparisons(out_of_fold)
split_comparisons = read_table(snakemake.input.split_comparisons)
designs = metrics.design_comparison(split_comparisons, comparisons)
every_subject = pd.concat(
    [oof.assign(modality=modality, model=model) for (modality, model), oof in out_of_fold.items()], ignore_index=True
)
write_table(every_subject[["modality", "model", *metrics.OUT_OF_FOLD_COLUMNS]], output.out_of_fold)
write_table(table, output.metrics)
write_table(comparisons, output.comparisons)
write_table(designs, output.designs)
for path in (output.predictions_figure, output.predictions_pdf):
    plots.plot_predictions(out_of_fold, Path(path))
for path in (output.folds, output.folds_pdf):
    plots.plot_mae_comparison(table, {}, Path(path), metrics.fold_maes(out_of_fold), "each fold", "out-of-fold MAE")
for path in (output.differences, output.differences_pdf):
    plots.plot_design_differences(split_comparisons, comparisons, Path(path))

summary = table.to_string(index=False)
log.info("cross-validation metrics:\n%s\ndetectable differences:\n%s", summary, designs.to_string(index=False))
print(f"Cross-validation metrics (results/crossval/metrics.csv):\n{summary}", file=sys.stderr)
