# The evaluation set: eval_size subjects with uniformly spread ages, chosen by subject id.


rule split:
    input:
        manifest=rules.manifest.output.manifest,
    output:
        split=report(
            derived("split", name="split", ext=".csv"),
            caption="../report/split_table.rst",
            category="3. Split",
        ),
        seeds=report(
            derived("split", name="seed_table", ext=".csv"),
            caption="../report/seed_table.rst",
            category="3. Split",
        ),
        figure=report(
            derived("split", name="split", ext=".png"),
            caption="../report/split.rst",
            category="3. Split",
        ),
    log:
        derived("logs", rule="split"),
    benchmark:
        derived("benchmarks", rule="split")
    conda:
        "../../envs/brainage.yaml"
    params:
        **config["split"],
        seed=config["seed"],
    script:
        "../scripts/split.py"
