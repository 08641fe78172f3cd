# The raw dataset: synthetic by default (generated here), or real IXI (config/ixi.yaml).


rule synthesize_subject:
    output:
        directory(SYNTHETIC / "subjects" / "{subject}"),
    params:
        row=synthetic_row,
        scale=config.get("synthetic", {}).get("scale"),
        seed=config["seed"],
    log:
        LOGS / "synthesize_subject" / "{subject}.log",
    benchmark:
        BENCHMARKS / "synthesize_subject" / "{subject}.tsv"
    threads: 1
    resources:
        # Peak RSS 1.05 GB at synthetic.scale 1.0 (IXI's real geometry), 0.17 GB at the demo's 0.25.
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/brainage.yaml"
    script:
        "../scripts/synthesize_subject.py"


rule assemble_synthetic_ixi:
    """Lay the subjects out like the IXI download, read-only, with IXI.xls beside the folders."""
    input:
        subjects=expand(
            SYNTHETIC / "subjects" / "{subject}",
            subject=synthetic_plan().query("imaged")["subject"] if IS_SYNTHETIC else [],
        ),
    output:
        raw=directory(SYNTHETIC / "IXI"),
        sheet=SYNTHETIC / "IXI.xls",
        truth=SYNTHETIC / "ground_truth.csv",
    params:
        plan=lambda wildcards: synthetic_plan(),
        seed=config["seed"],
    log:
        LOGS / "assemble_synthetic_ixi.log",
    benchmark:
        BENCHMARKS / "assemble_synthetic_ixi" / "all.tsv"
    conda:
        "../../envs/brainage.yaml"
    script:
        "../scripts/assemble_synthetic_ixi.py"
