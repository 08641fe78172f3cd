# One training job per (modality, model, replicate). On a GPU machine each takes a `gpu` token, so
# `--resources gpu=N` runs N at a time.


rule train:
    input:
        manifest=rules.manifest.output.manifest,
        split=rules.split.output.split,
        # The arrays the run reads (through the manifest's tensor columns), declared so that a
        # rewritten array reruns the run.
        arrays=lambda wildcards: array_files(training_arrays(included_subjects(), channel_set(wildcards))),
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
