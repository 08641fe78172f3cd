"""Metrics, the paired modality comparison, reference lines and the evaluation figures."""

import sys
from pathlib import Path

from brainage import metrics, plots
from brainage.io import read_table, write_json, write_table
from brainage.logs import log_to_file

log = log_to_file(snakemake.log[0])
params = snakemake.params
runs = [tuple(run) for run in params.runs]
every_predictions = {run: read_table(path) for run, path in zip(runs, snakemake.input.predictions, strict=True)}
# Headline numbers and figures are the first replicate's; the others give the spread.
headline = [run for run in runs if run[2] == params.first_replicate]
predictions = {run[:2]: every_predictions[run] for run in headline}
# Baselines have no epochs, hence no history.
trained_runs = [tuple(run) for run in params.trained_runs]
histories = {
    run[:2]: read_table(path)
    for run, path in zip(trained_runs, snakemake.input.histories, strict=True)
    if run in headline
}
truth = read_table(snakemake.input.truth[0]) if snakemake.input.truth else None

replicates = metrics.replicate_maes(every_predictions)
table = metrics.metrics_table(
    predictions, n_resamples=params.bootstrap_resamples, seed=params.seed, histories=histories, replicates=replicates
)
comparisons = metrics.paired_comparisons(predictions)
references = metrics.reference_lines(next(iter(predictions.values())), truth)
write_table(table, snakemake.output.metrics)
write_table(comparisons, snakemake.output.comparisons)
write_table(replicates, snakemake.output.replicates)
write_json(references, snakemake.output.references)

output = snakemake.output
for png, pdf, draw, data in [
    (output.learning_curves, output.learning_curves_pdf, plots.plot_learning_curves, histories),
    (output.predictions_figure, output.predictions_pdf, plots.plot_predictions, predictions),
    (output.error_vs_age, output.error_vs_age_pdf, plots.plot_error_vs_age, predictions),
]:
    for path in (png, pdf):
        draw(data, Path(path))
for path in (output.mae, output.mae_pdf):
    plots.plot_mae_comparison(table, references, Path(path), replicates)

log.info("references: %s", references)
summary = table.to_string(index=False)
log.info("evaluation metrics:\n%s", summary)
# Also on the terminal: the comparison table is the answer the whole run exists for.
print(f"Evaluation metrics (results/evaluation/metrics.csv):\n{summary}", file=sys.stderr)
