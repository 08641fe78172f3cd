# Cross-validation beside the study's split (config cross_validation.folds): every subject held
# out once, each fold's runs trained like the study's first replicate, one out-of-fold table.


rule crossval_split:
    """Age-stratified folds over every included subject, each with its own inner tune set."""
    input:
        manifest=rules.manifest.output.manifest,
    output:
        splits=expand(derived("crossval", fold="{fold}", name="split", ext=".csv"), fold=folds()),
    log:
        derived("logs", rule="crossval_split"),
    benchmark:
        derived("benchmarks", rule="crossval_split")
    conda:
        "../../envs/brainage.yaml"
    params:
        folds=CROSSVAL_FOLDS,
        tune_size=config["split"]["tune_size"],
        seed=config["seed"],
    script:
        "../scripts/crossval_split.py"


use rule train as train_fold with:
    input:
        unpack(fold_run_inputs),
    output:
        weights=derived("crossval", **FOLD_RUN_WILDCARDS, name="model", ext=".pt"),
        history=derived("crossval", **FOLD_RUN_WILDCARDS, name="history", ext=".csv"),
        predictions=derived("crossval", **FOLD_RUN_WILDCARDS, name="predictions", ext=".csv"),
    log:
        derived("logs", rule="train_fold", **FOLD_RUN_WILDCARDS),
    benchmark:
        derived("benchmarks", rule="train_fold", **FOLD_RUN_WILDCARDS)
    wildcard_constraints:
        model="|".join(model for model in config["models"] if model not in BASELINES),
    params:
        checkpoint=str(derived("checkpoints", **FOLD_RUN_WILDCARDS, name="train_state", ext=".pt")),
        seed=config["seed"] + config["replicates"][0],


use rule fit_baseline as fit_baseline_fold with:
    input:
        unpack(fold_run_inputs),
    output:
        model=derived("crossval", **FOLD_RUN_WILDCARDS, name="model", ext=".pkl"),
        selection=derived("crossval", **FOLD_RUN_WILDCARDS, name="selection", ext=".csv"),
        predictions=derived("crossval", **FOLD_RUN_WILDCARDS, name="predictions", ext=".csv"),
    log:
        derived("logs", rule="fit_baseline_fold", **FOLD_RUN_WILDCARDS),
    benchmark:
        derived("benchmarks", rule="fit_baseline_fold", **FOLD_RUN_WILDCARDS)


rule crossval_evaluate:
    """Out-of-fold predictions for every subject, their metrics and modality comparisons, and
    the detectable differences of the single split and of cross-validation side by side."""
    input:
        predictions=fold_predictions(),
        split_comparisons=rules.evaluate.output.comparisons,
    output:
        out_of_fold=report(
            derived("crossval", name="out_of_fold", ext=".csv"),
            caption="../report/crossval_out_of_fold.rst",
            category="5. Evaluation",
            subcategory="Cross-validation",
        ),
        metrics=report(
            derived("crossval", name="metrics", ext=".csv"),
            caption="../report/crossval_metrics.rst",
            category="5. Evaluation",
            subcategory="Cross-validation",
        ),
        comparisons=report(
            derived("crossval", name="comparisons", ext=".csv"),
            caption="../report/comparisons.rst",
            category="5. Evaluation",
            subcategory="Cross-validation",
        ),
        designs=report(
            derived("crossval", name="designs", ext=".csv"),
            caption="../report/crossval_designs.rst",
            category="5. Evaluation",
            subcategory="Cross-validation",
        ),
        predictions_figure=report(
            derived("crossval", name="predictions", ext=".png"),
            caption="../report/crossval_predictions.rst",
            category="5. Evaluation",
            subcategory="Cross-validation",
        ),
        predictions_pdf=derived("crossval", name="predictions", ext=".pdf"),
        folds=report(
            derived("crossval", name="folds", ext=".png"),
            caption="../report/crossval_folds.rst",
            category="5. Evaluation",
            subcategory="Cross-validation",
        ),
        folds_pdf=derived("crossval", name="folds", ext=".pdf"),
        differences=report(
            derived("crossval", name="differences", ext=".png"),
            caption="../report/crossval_differences.rst",
            category="5. Evaluation",
            subcategory="Cross-validation",
        ),
        differences_pdf=derived("crossval", name="differences", ext=".pdf"),
    log:
        derived("logs", rule="crossval_evaluate"),
    benchmark:
        derived("benchmarks", rule="crossval_evaluate")
    conda:
        "../../envs/brainage.yaml"
    params:
        fold_runs=fold_runs(),
        bootstrap_resamples=config["evaluation"]["bootstrap_resamples"],
        seed=config["seed"],
    script:
        "../scripts/crossval_evaluate.py"
