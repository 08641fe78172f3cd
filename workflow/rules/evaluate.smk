# Metrics, the modality comparison and every figure, from the training runs' files.


rule evaluate:
    input:
        predictions=run_predictions(),
        histories=run_outputs(rules.train.output.history, trained_runs()),
        truth=[rules.assemble_synthetic_ixi.output.truth] if IS_SYNTHETIC else [],
    output:
        metrics=report(
            derived("evaluation", name="metrics", ext=".csv"),
            caption="../report/metrics.rst",
            category="5. Evaluation",
        ),
        comparisons=report(
            derived("evaluation", name="comparisons", ext=".csv"),
            caption="../report/comparisons.rst",
            category="5. Evaluation",
        ),
        replicates=derived("evaluation", name="replicates", ext=".csv"),
        references=derived("evaluation", name="references", ext=".json"),
        learning_curves=report(
            derived("evaluation", name="learning_curves", ext=".png"),
            caption="../report/learning_curves.rst",
            category="4. Training",
        ),
        learning_curves_pdf=derived("evaluation", name="learning_curves", ext=".pdf"),
        predictions_figure=report(
            derived("evaluation", name="predictions", ext=".png"),
            caption="../report/predictions.rst",
            category="5. Evaluation",
        ),
        predictions_pdf=derived("evaluation", name="predictions", ext=".pdf"),
        error_vs_age=report(
            derived("evaluation", name="error_vs_age", ext=".png"),
            caption="../report/error_vs_age.rst",
            category="5. Evaluation",
        ),
        error_vs_age_pdf=derived("evaluation", name="error_vs_age", ext=".pdf"),
        mae=report(
            derived("evaluation", name="mae", ext=".png"),
            caption="../report/mae.rst",
            category="5. Evaluation",
        ),
        mae_pdf=derived("evaluation", name="mae", ext=".pdf"),
    log:
        derived("logs", rule="evaluate"),
    benchmark:
        derived("benchmarks", rule="evaluate")
    conda:
        "../../envs/brainage.yaml"
    params:
        runs=runs(),
        trained_runs=trained_runs(),
        first_replicate=config["replicates"][0],
        bootstrap_resamples=config["evaluation"]["bootstrap_resamples"],
        seed=config["seed"],
    script:
        "../scripts/evaluate.py"


rule benchmark_summary:
    """Runtime and memory of every job, from Snakemake's benchmark files."""
    input:
        rules.evaluate.output.metrics,
        # Attribution and cross-validation jobs are the last besides evaluate: their benchmarks
        # must be there too.
        run_outputs(rules.attribution.output.table, attributed_runs()),
        # A function: rule crossval_evaluate, defined after this file, reads evaluate's output.
        lambda wildcards: crossval_outputs(),
    output:
        table=report(
            derived("evaluation", name="benchmarks", ext=".csv"),
            caption="../report/benchmarks_table.rst",
            category="7. Cost",
        ),
        figure=report(
            derived("evaluation", name="benchmarks", ext=".png"),
            caption="../report/benchmarks.rst",
            category="7. Cost",
        ),
    log:
        derived("logs", rule="benchmark_summary"),
    conda:
        "../../envs/brainage.yaml"
    params:
        folder=str(derived("benchmarks")),
    script:
        "../scripts/benchmark_summary.py"
