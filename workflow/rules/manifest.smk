# One row per usable subject: demographics, training arrays, QC numbers; and why others left.


rule manifest:
    input:
        inventory=rules.inventory.output.subjects,
        inventory_exclusions=rules.inventory.output.exclusions,
        qc=per_subject(rules.qc_subject.output.numbers),
        arrays=lambda wildcards: array_files(training_arrays(included_subjects())),
    output:
        manifest=report(
            derived("manifest", name="manifest", ext=".csv"),
            caption="../report/manifest.rst",
            category="2. Preprocessing",
        ),
        exclusions=report(
            derived("manifest", name="exclusions", ext=".csv"),
            caption="../report/exclusions.rst",
            category="2. Preprocessing",
        ),
        qc_table=report(
            derived("manifest", name="qc_table", ext=".csv"),
            caption="../report/qc_table.rst",
            category="2. Preprocessing",
        ),
    log:
        derived("logs", rule="manifest"),
    benchmark:
        derived("benchmarks", rule="manifest")
    conda:
        "../../envs/brainage.yaml"
    params:
        qc_bounds=config["preprocessing"]["qc_bounds"],
        arrays=lambda wildcards: training_arrays(included_subjects()),
    script:
        "../scripts/manifest.py"


rule qc_gallery:
    input:
        manifest=rules.manifest.output.manifest,
        inventory=rules.inventory.output.subjects,
        tof=per_subject(rules.register.output.tof),
    output:
        report(
            derived("manifest", name="qc_gallery", ext=".png"),
            caption="../report/qc_gallery.rst",
            category="2. Preprocessing",
        ),
    log:
        derived("logs", rule="qc_gallery"),
    benchmark:
        derived("benchmarks", rule="qc_gallery")
    conda:
        "../../envs/brainage.yaml"
    params:
        # In the order of input.tof.
        subjects=included_subjects,
    script:
        "../scripts/qc_gallery.py"
