# Where each model looks (brainage.attribution): the regions once per study, then attribution
# maps of the first replicate of every torch run, with a regional table and a figure per run.


rule attribution_regions:
    """The regions every run's attribution is summarized over, and the training subjects' means (the baseline)."""
    input:
        manifest=rules.manifest.output.manifest,
        split=rules.split.output.split,
        # Every subject's arrays: the training means of every channel are the runs' attribution
        # baseline, and give the brain and the vessel region.
        arrays=lambda wildcards: array_files(training_arrays(included_subjects())),
        atlas=attribution_atlas(),
    output:
        regions=derived("attribution", name="regions", ext=".nii.gz"),
        table=report(
            derived("attribution", name="regions", ext=".csv"),
            caption="../report/attribution_regions.rst",
            category=ATTRIBUTION_CATEGORY,
        ),
        means=derived("attribution", name="training_means", ext=".nii.gz"),
    log:
        derived("logs", rule="attribution_regions"),
    benchmark:
        derived("benchmarks", rule="attribution_regions")
    conda:
        "../../envs/brainage.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        grid=config["preprocessing"]["grid"],
        template=config["preprocessing"]["template"],
        atlas=config["attribution"]["atlas"],
        synthetic_scale=config["synthetic"]["scale"] if IS_SYNTHETIC else None,
        seed=config["seed"],
    script:
        "../scripts/attribution_regions.py"


rule attribution:
    """Attribution maps of a trained run's eval predictions, their regional enrichment, the randomization check."""
    input:
        unpack(run_inputs),
        weights=rules.train.output.weights,
        regions=rules.attribution_regions.output.regions,
        region_table=rules.attribution_regions.output.table,
        training_means=rules.attribution_regions.output.means,
    output:
        **(
            {"subject_maps": directory(derived("attribution", **RUN_WILDCARDS))}
            if config["attribution"]["subject_maps"]
            else {}
        ),
        mean_map=derived("attribution", **RUN_WILDCARDS, name="mean_attribution", ext=".nii.gz"),
        table=report(
            derived("attribution", **RUN_WILDCARDS, name="enrichment", ext=".csv"),
            caption="../report/attribution_enrichment.rst",
            category=ATTRIBUTION_CATEGORY,
            subcategory="{modality} · {model}",
        ),
        figure=report(
            derived("attribution", **RUN_WILDCARDS, name="attribution", ext=".png"),
            caption="../report/attribution.rst",
            category=ATTRIBUTION_CATEGORY,
            subcategory="{modality} · {model}",
        ),
    log:
        derived("logs", rule="attribution", **RUN_WILDCARDS),
    benchmark:
        derived("benchmarks", rule="attribution", **RUN_WILDCARDS)
    conda:
        "../../envs/brainage.yaml"
    # Where the run trained: each integration step is a gradient pass, as a training step is.
    threads: lambda wildcards: 2 if trains_on_gpu(wildcards.model) else 1
    resources:
        gpu=lambda wildcards: int(trains_on_gpu(wildcards.model)),
        # The eval images, their signed attributions and maps are held together: 50 subjects × 2
        # channels at 160×192×160 take 6 GB.
        mem_mb=8000,
        runtime=60,
    params:
        settings=config["attribution"],
        device=lambda wildcards: model_training(wildcards.model)["device"],
        batch_size=lambda wildcards: model_training(wildcards.model)["batch_size"],
        seed=training_seed,
    script:
        "../scripts/attribution.py"
