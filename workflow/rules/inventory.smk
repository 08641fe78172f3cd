# Which subjects exist, with which images and which age: known only once the data are there.


checkpoint inventory:
    input:
        raw=raw_dir(),
        sheet=demographics_sheet(),
    output:
        subjects=derived("inventory", name="subjects", ext=".csv"),
        exclusions=derived("inventory", name="exclusions", ext=".csv"),
    log:
        derived("logs", rule="inventory"),
    benchmark:
        derived("benchmarks", rule="inventory")
    conda:
        "../../envs/brainage.yaml"
    # Two: a larger request would never start on a two-core cluster node (as in the SLURM test).
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        source=config["dataset"]["source"],
        participant_columns=participant_columns() if IS_BIDS else None,
        sheet_name=config["dataset"]["sheet"],
        required=config["dataset"]["required_scans"],
        age_range=config["dataset"]["age_range"],
    script:
        "../scripts/inventory.py"


rule youngest_and_oldest:
    input:
        inventory=rules.inventory.output.subjects,
    output:
        report(
            derived("figures", name="youngest_oldest", ext=".png"),
            caption="../report/youngest_oldest.rst",
            category="1. Data",
        ),
    log:
        derived("logs", rule="youngest_oldest"),
    conda:
        "../../envs/brainage.yaml"
    script:
        "../scripts/youngest_oldest.py"
