# Real IXI: download the official archives (resumable, MD5-verified) and extract them read-only.
# Included only with dataset.download true; otherwise raw_dir and demographics must hold the data.

# The raw folder is extract_ixi's output, and Snakemake deletes an output folder before it reruns
# the job and after the job fails. So, before any job, raw_dir must be a folder this workflow may
# delete: inside the working directory, holding no other output, and absent, empty or marked as
# extracted by this workflow (the extraction marks it before writing anything into it). A user's
# existing folder is refused here, naming the key, and is read with download: false instead.
ixi.check_raw_dir(Path(raw_dir()), Path.cwd(), [RESULTS, download_dir()])


wildcard_constraints:
    file="|".join(map(re.escape, ixi_file_table()["name"])),


rule download_ixi:
    output:
        download_dir() / "{file}",
    log:
        derived("logs", rule="download_ixi", name="{file}"),
    benchmark:
        derived("benchmarks", rule="download_ixi", name="{file}")
    retries: 2
    conda:
        "../../envs/brainage.yaml"
    resources:
        mem_mb=500,
        runtime=24 * 60,
    params:
        entry=lambda wildcards: ixi_file_entry(wildcards.file),
    script:
        "../scripts/download_ixi.py"


rule extract_ixi:
    input:
        **{scan: download_dir() / ixi_archive(scan) for scan in RAW_SCANS},
    output:
        directory(raw_dir()),
    log:
        derived("logs", rule="extract_ixi"),
    benchmark:
        derived("benchmarks", rule="extract_ixi")
    conda:
        "../../envs/brainage.yaml"
    resources:
        mem_mb=1000,
        runtime=6 * 60,
    params:
        # Extraction checks each archive against these again: one already in download_dir when
        # the run started never went through download_ixi, which Snakemake does not rerun.
        entries={scan: ixi_file_entry(ixi_archive(scan)) for scan in RAW_SCANS},
    script:
        "../scripts/extract_ixi.py"
