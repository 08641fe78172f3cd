# The raw dataset: synthetic by default (generated here), or real IXI (config/ixi.yaml).


rule synthesize_subject:
    """One subject's raw scans in IXI's layout, and its ground truth beside them."""
    output:
        directory(derived("synthetic", subject="{subject}")),
    log:
        derived("logs", rule="synthesize_subject", subject="{subject}"),
    benchmark:
        derived("benchmarks", rule="synthesize_subject", subject="{subject}")
    conda:
        "../../envs/brainage.yaml"
    threads: 1
    resources:
        # Peak RSS 1.05 GB at synthetic.scale 1.0 (IXI's real geometry), 0.17 GB at the demo's 0.25.
        mem_mb=2000,
        runtime=10,
    params:
        row=synthetic_row,
        truth=synthetic_truth,
        scale=config.get("synthetic", {}).get("scale"),
        seed=config["seed"],
    script:
        "../scripts/synthesize_subject.py"


rule assemble_synthetic_ixi:
    """Lay the subjects out like the IXI download, read-only, with IXI.xls beside the folders."""
    input:
        subjects=expand(
            rules.synthesize_subject.output[0],
            subject=synthetic_plan().query("imaged")["subject"] if IS_SYNTHETIC else [],
        ),
    output:
        raw=directory(derived("synthetic", name="IXI")),
        sheet=derived("synthetic", name="IXI", ext=".xls"),
        truth=derived("synthetic", name="ground_truth", ext=".csv"),
    log:
        derived("logs", rule="assemble_synthetic_ixi"),
    benchmark:
        derived("benchmarks", rule="assemble_synthetic_ixi")
    conda:
        "../../envs/brainage.yaml"
    params:
        plan=lambda wildcards: synthetic_plan(),
        seed=config["seed"],
    script:
        "../scripts/assemble_synthetic_ixi.py"
