# Real IXI: download the official archives (resumable, MD5-verified) and extract them read-only.
# Included only with dataset.download true; otherwise raw_dir and demographics must hold the data.

# The raw folder is extract_ixi's output, and Snakemake deletes an output folder before it reruns
# the job and after the job fails. So, before any job, raw_dir must be a folder this workflow may
# delete: inside the working directory, holding no other output, and absent, empty or marked as
# extracted by this workflow (the extraction marks it before writing anything into it). A user's
# existing folder is refused here, naming the key, and is read with download: false instead.
ixi.check_raw_dir(Path(raw_dir()), Path.cwd(), [RESULTS, IXI_DOWNLOADS])


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
        directory(raw_dir()),
    params:
        # Extraction checks each archive against these again: one already in download_dir when
        # the run started never went through download_ixi, which Snakemake does not rerun.
        entries={modality: ixi_file_entry(f"IXI-{modality}.tar") for modality in ("T1", "PD", "MRA")},
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
