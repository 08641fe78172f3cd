# One training job per (modality, model, replicate). On a GPU machine each takes a `gpu` token, so
# `--resources gpu=N` runs N at a time. One baseline job per (modality, baseline), on the CPU.


rule train:
    input:
        unpack(run_inputs),
    output:
        weights=derived("train", **RUN_WILDCARDS, name="model", ext=".pt"),
        history=derived("train", **RUN_WILDCARDS, name="history", ext=".csv"),
        predictions=derived("train", **RUN_WILDCARDS, name="predictions", ext=".csv"),
    log:
        derived("logs", rule="train", **RUN_WILDCARDS),
    benchmark:
        derived("benchmarks", rule="train", **RUN_WILDCARDS)
    conda:
        "../../envs/brainage.yaml"
    # On the CPU, two one-thread jobs side by side do 2× (cnn3d) and 1.2× (HighRes3DNet) the
    # work of one two-thread job: CPU training takes one thread per job.
    threads: lambda wildcards: 2 if trains_on_gpu(wildcards.model) else 1
    resources:
        gpu=lambda wildcards: int(trains_on_gpu(wildcards.model)),
        mem_mb=8000,
        runtime=600,
    params:
        channels=channel_set,
        model_params=lambda wildcards: config["models"][wildcards.model].get("params", {}),
        training=lambda wildcards: model_training(wildcards.model),
        checkpoint=str(derived("checkpoints", **RUN_WILDCARDS, name="train_state", ext=".pt")),
        seed=training_seed,
    script:
        "../scripts/train.py"


rule fit_baseline:
    """The classical baseline of one modality (brainage.baseline): fitted once, whatever the
    replicates, on one CPU thread and without a `gpu` token."""
    input:
        unpack(run_inputs),
    output:
        model=derived("train", **BASELINE_WILDCARDS, name="model", ext=".pkl"),
        selection=derived("train", **BASELINE_WILDCARDS, name="selection", ext=".csv"),
        predictions=derived("train", **BASELINE_WILDCARDS, name="predictions", ext=".csv"),
    log:
        derived("logs", rule="fit_baseline", **BASELINE_WILDCARDS),
    benchmark:
        derived("benchmarks", rule="fit_baseline", **BASELINE_WILDCARDS)
    wildcard_constraints:
        model="|".join(BASELINES),
    conda:
        "../../envs/brainage.yaml"
    threads: 1
    # The real study's T1+TOF_bin features and SVD: about 3 GB (config/ixi.yaml).
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        channels=channel_set,
        model_params=lambda wildcards: config["models"][wildcards.model]["params"],
    script:
        "../scripts/fit_baseline.py"
