# Which subjects exist, with which images and which age: known only once the data are there.


checkpoint inventory:
    input:
        raw=raw_dir(),
        sheet=demographics_sheet(),
    output:
        subjects=RESULTS / "inventory" / "subjects.csv",
        exclusions=RESULTS / "inventory" / "exclusions.csv",
    params:
        sheet_name=config["dataset"]["sheet"],
        required=config["dataset"]["required_modalities"],
        age_range=config["dataset"]["age_range"],
    log:
        LOGS / "inventory.log",
    benchmark:
        BENCHMARKS / "inventory" / "all.tsv"
    # Two: a larger request would never start on a two-core cluster node (as in the SLURM test).
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/brainage.yaml"
    script:
        "../scripts/inventory.py"


rule youngest_and_oldest:
    input:
        inventory=rules.inventory.output.subjects,
    output:
        report(
            RESULTS / "figures" / "youngest_oldest.png",
            caption="../report/youngest_oldest.rst",
            category="1. Data",
        ),
    log:
        LOGS / "youngest_oldest.log",
    conda:
        "../../envs/brainage.yaml"
    script:
        "../scripts/youngest_oldest.py"
