# One row per usable subject: demographics, training arrays, QC numbers; and why others left.


rule manifest:
    input:
        inventory=rules.inventory.output.subjects,
        inventory_exclusions=rules.inventory.output.exclusions,
        qc=per_subject(rules.qc_subject.output.numbers),
        arrays=per_subject(PREPROCESS / "tensors" / "T1.npy"),
    output:
        manifest=report(
            RESULTS / "manifest" / "manifest.csv",
            caption="../report/manifest.rst",
            category="2. Preprocessing",
        ),
        exclusions=report(
            RESULTS / "manifest" / "exclusions.csv",
            caption="../report/exclusions.rst",
            category="2. Preprocessing",
        ),
        qc_table=report(
            RESULTS / "manifest" / "qc_table.csv",
            caption="../report/qc_table.rst",
            category="2. Preprocessing",
        ),
    params:
        qc_bounds=config["preprocessing"]["qc_bounds"],
        channels=["T1", "TOF", "TOF_bin"],
    log:
        LOGS / "manifest.log",
    benchmark:
        BENCHMARKS / "manifest" / "all.tsv"
    conda:
        "../../envs/brainage.yaml"
    script:
        "../scripts/manifest.py"


rule qc_gallery:
    input:
        manifest=rules.manifest.output.manifest,
        inventory=rules.inventory.output.subjects,
        tof=per_subject(rules.register.output.tof),
    output:
        report(
            RESULTS / "manifest" / "qc_gallery.png",
            caption="../report/qc_gallery.rst",
            category="2. Preprocessing",
        ),
    log:
        LOGS / "qc_gallery.log",
    benchmark:
        BENCHMARKS / "qc_gallery" / "all.tsv"
    conda:
        "../../envs/brainage.yaml"
    script:
        "../scripts/qc_gallery.py"
