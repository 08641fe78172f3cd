# The evaluation set: eval_size subjects with uniformly spread ages, chosen by subject id.


rule split:
    input:
        manifest=rules.manifest.output.manifest,
    output:
        split=report(
            RESULTS / "split" / "split.csv",
            caption="../report/split_table.rst",
            category="3. Split",
        ),
        seeds=report(
            RESULTS / "split" / "seed_table.csv",
            caption="../report/seed_table.rst",
            category="3. Split",
        ),
        figure=report(
            RESULTS / "split" / "split.png",
            caption="../report/split.rst",
            category="3. Split",
        ),
    params:
        **config["split"],
        seed=config["seed"],
    log:
        LOGS / "split.log",
    benchmark:
        BENCHMARKS / "split" / "all.tsv"
    conda:
        "../../envs/brainage.yaml"
    script:
        "../scripts/split.py"
