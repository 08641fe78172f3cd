# One training job per (modality, model). gpu=1 lets `--resources gpu=N` run N at a time.


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
        checkpoint_dir=lambda wildcards: RESULTS / "checkpoints" / wildcards.modality / wildcards.model,
        seed=config["seed"],
    log:
        LOGS / "train" / "{modality}_{model}.log",
    benchmark:
        BENCHMARKS / "train" / "{modality}_{model}.tsv"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=600,
    conda:
        "../../envs/brainage.yaml"
    script:
        "../scripts/train.py"
