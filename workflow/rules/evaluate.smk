# Metrics, the modality comparison and every figure, from the training runs' files.


rule evaluate:
    input:
        predictions=run_outputs("predictions.csv"),
        histories=run_outputs("history.csv"),
        truth=[SYNTHETIC / "ground_truth.csv"] if IS_SYNTHETIC else [],
    output:
        metrics=report(
            RESULTS / "evaluation" / "metrics.csv",
            caption="../report/metrics.rst",
            category="5. Evaluation",
        ),
        comparisons=report(
            RESULTS / "evaluation" / "comparisons.csv",
            caption="../report/comparisons.rst",
            category="5. Evaluation",
        ),
        replicates=RESULTS / "evaluation" / "replicates.csv",
        references=RESULTS / "evaluation" / "references.json",
        learning_curves=report(
            RESULTS / "evaluation" / "learning_curves.png",
            caption="../report/learning_curves.rst",
            category="4. Training",
        ),
        learning_curves_pdf=RESULTS / "evaluation" / "learning_curves.pdf",
        predictions_figure=report(
            RESULTS / "evaluation" / "predictions.png",
            caption="../report/predictions.rst",
            category="5. Evaluation",
        ),
        predictions_pdf=RESULTS / "evaluation" / "predictions.pdf",
        error_vs_age=report(
            RESULTS / "evaluation" / "error_vs_age.png",
            caption="../report/error_vs_age.rst",
            category="5. Evaluation",
        ),
        error_vs_age_pdf=RESULTS / "evaluation" / "error_vs_age.pdf",
        mae=report(
            RESULTS / "evaluation" / "mae.png",
            caption="../report/mae.rst",
            category="5. Evaluation",
        ),
        mae_pdf=RESULTS / "evaluation" / "mae.pdf",
    params:
        runs=runs(),
        first_replicate=config["replicates"][0],
        bootstrap_resamples=config["evaluation"]["bootstrap_resamples"],
        seed=config["seed"],
    log:
        LOGS / "evaluate.log",
    benchmark:
        BENCHMARKS / "evaluate" / "all.tsv"
    conda:
        "../../envs/brainage.yaml"
    script:
        "../scripts/evaluate.py"


rule benchmark_summary:
    """Runtime and memory of every job, from Snakemake's benchmark files."""
    input:
        rules.evaluate.output.metrics,
    output:
        table=report(
            RESULTS / "evaluation" / "benchmarks.csv",
            caption="../report/benchmarks_table.rst",
            category="6. Cost",
        ),
        figure=report(
            RESULTS / "evaluation" / "benchmarks.png",
            caption="../report/benchmarks.rst",
            category="6. Cost",
        ),
    params:
        folder=BENCHMARKS,
    log:
        LOGS / "benchmark_summary.log",
    conda:
        "../../envs/brainage.yaml"
    script:
        "../scripts/benchmark_summary.py"
