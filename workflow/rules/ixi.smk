# Real IXI: download the official archives (resumable, MD5-verified) and extract them read-only.
# Included only with dataset.download true; otherwise raw_dir and demographics must hold the data.


wildcard_constraints:
    file="|".join(map(re.escape, ixi_file_table()["name"])),


rule download_ixi:
    output:
        IXI_DOWNLOADS / "{file}",
    params:
        entry=lambda wildcards: ixi_file_entry(wildcards.file),
    log:
        LOGS / "download_ixi" / "{file}.log",
    benchmark:
        BENCHMARKS / "download_ixi" / "{file}.tsv"
    retries: 2
    resources:
        mem_mb=500,
        runtime=24 * 60,
    conda:
        "../../envs/brainage.yaml"
    script:
        "../scripts/download_ixi.py"


rule extract_ixi:
    input:
        **{modality: IXI_DOWNLOADS / f"IXI-{modality}.tar" for modality in ("T1", "PD", "MRA")},
    output:
        directory(config["dataset"].get("raw_dir", "results/ixi/raw")),
    log:
        LOGS / "extract_ixi.log",
    benchmark:
        BENCHMARKS / "extract_ixi" / "all.tsv"
    resources:
        mem_mb=1000,
        runtime=6 * 60,
    conda:
        "../../envs/brainage.yaml"
    script:
        "../scripts/extract_ixi.py"
