# Per subject: T1 and TOF-MRA registered to PD (and PD to the template), the vessel mask,
# the training arrays and the QC numbers. One job per subject and step, every step a file.


rule template:
    """The MNI152 template and its brain mask at the training grid's spacing, once per study."""
    output:
        t1=derived("template", name="template_T1", ext=".nii.gz"),
        mask=derived("template", name="template_brain_mask", ext=".nii.gz"),
    log:
        derived("logs", rule="template"),
    benchmark:
        derived("benchmarks", rule="template")
    conda:
        "../../envs/brainage.yaml"
    params:
        spacing=config["preprocessing"]["grid"]["spacing"],
    script:
        "../scripts/template.py"


rule register:
    """Where MRA becomes TOF: the raw MRA in, the TOF registered to PD out (brainage.vocabulary)."""
    input:
        unpack(raw_images),
        template=rules.template.output if config["preprocessing"]["template"] else [],
    output:
        **(
            {"template_transform": derived("preprocess", subject="{subject}", name="PD_to_template", ext=".mat")}
            if config["preprocessing"]["template"]
            else {}
        ),
        pd=derived("preprocess", subject="{subject}", name="PD", ext=".nii.gz"),
        t1=derived("preprocess", subject="{subject}", name="T1_reg_PD", ext=".nii.gz"),
        tof=derived("preprocess", subject="{subject}", name="TOF_reg_PD", ext=".nii.gz"),
        mask=derived("preprocess", subject="{subject}", name="brain_mask", ext=".nii.gz"),
        t1_transform=derived("preprocess", subject="{subject}", name="T1_to_PD", ext=".mat"),
        tof_transform=derived("preprocess", subject="{subject}", name="TOF_to_PD", ext=".mat"),
        summary=derived("preprocess", subject="{subject}", name="registration", ext=".json"),
    log:
        derived("logs", rule="register", subject="{subject}"),
    benchmark:
        derived("benchmarks", rule="register", subject="{subject}")
    conda:
        "../../envs/brainage.yaml"
    threads: 1
    resources:
        # Peak RSS at IXI's real size (T1 256×256×150, MRA 512×512×100): 1.3 GB.
        mem_mb=3000,
        runtime=30,
    params:
        transform=config["preprocessing"]["registration"],
        seed=config["seed"],
    script:
        "../scripts/register.py"


rule binarize:
    """The vessel mask: the registered TOF's brightest voxels inside the brain mask."""
    input:
        tof=rules.register.output.tof,
        mask=rules.register.output.mask,
    output:
        derived("preprocess", subject="{subject}", name="TOF_reg_PD_bin", ext=".nii.gz"),
    log:
        derived("logs", rule="binarize", subject="{subject}"),
    benchmark:
        derived("benchmarks", rule="binarize", subject="{subject}")
    conda:
        "../../envs/brainage.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        **config["preprocessing"]["binarize"],
    script:
        "../scripts/binarize.py"


rule training_arrays:
    input:
        # Each channel's PD-space image, keyed by the channel.
        **{T1: rules.register.output.t1, TOF: rules.register.output.tof, TOF_BIN: rules.binarize.output[0]},
        mask=rules.register.output.mask,
        summary=rules.register.output.summary,
    output:
        **channel_arrays("{subject}"),
    log:
        derived("logs", rule="training_arrays", subject="{subject}"),
    benchmark:
        derived("benchmarks", rule="training_arrays", subject="{subject}")
    conda:
        "../../envs/brainage.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        grid=config["preprocessing"]["grid"],
        template=config["preprocessing"]["template"],
    script:
        "../scripts/training_arrays.py"


rule qc_subject:
    input:
        pd=rules.register.output.pd,
        t1=rules.register.output.t1,
        tof=rules.register.output.tof,
        tof_bin=rules.binarize.output[0],
        mask=rules.register.output.mask,
        summary=rules.register.output.summary,
        truth=ground_truth,
    output:
        png=derived("qc", subject="{subject}", ext=".png"),
        numbers=derived("qc", subject="{subject}", ext=".json"),
    log:
        derived("logs", rule="qc_subject", subject="{subject}"),
    benchmark:
        derived("benchmarks", rule="qc_subject", subject="{subject}")
    conda:
        "../../envs/brainage.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/qc_subject.py"
