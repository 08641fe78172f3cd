# One training job per (modality, model, replicate). On a GPU machine each takes a `gpu` token, so
# `--resources gpu=N` runs N at a time.


rule train:
    input:
        manifest=rules.manifest.output.manifest,
        split=rules.split.output.split,
    output:
        weights=TRAIN / "model.pt",
        history=TRAIN / "history.csv",
        predictions=TRAIN / "predictions.csv",
    params:
        channels=lambda wildcards: config["modalities"][wildcards.modality],
        model_params=lambda wildcards: config["models"][wildcards.model].get("params", {}),
        training=lambda wildcards: model_training(wildcards.model),
        checkpoint_dir=lambda wildcards: str(TRAIN_CHECKPOINTS).format(**wildcards),
        seed=training_seed,
    log:
        LOGS / "train" / "{modality}_{model}_replicate{replicate}.log",
    benchmark:
        BENCHMARKS / "train" / "{modality}_{model}_replicate{replicate}.tsv"
    # On the CPU, two one-thread jobs side by side do 2× (cnn3d) and 1.2× (HighRes3DNet) the
    # work of one two-thread job: CPU training takes one thread per job.
    threads: lambda wildcards: 2 if trains_on_gpu(wildcards.model) else 1
    resources:
        gpu=lambda wildcards: int(trains_on_gpu(wildcards.model)),
        mem_mb=8000,
        runtime=600,
    conda:
        "../../envs/brainage.yaml"
    script:
        "../scripts/train.py"
