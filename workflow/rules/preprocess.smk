# Per subject: T1 and TOF-MRA registered to PD (and PD to the template), the vessel mask,
# the training arrays and the QC numbers. One job per subject and step, every step a file.


rule template:
    """The MNI152 template and its brain mask at the training grid's spacing, once per study."""
    output:
        t1=RESULTS / "template" / "template_T1.nii.gz",
        mask=RESULTS / "template" / "template_brain_mask.nii.gz",
    params:
        spacing=config["preprocessing"]["grid"]["spacing"],
    log:
        LOGS / "template.log",
    benchmark:
        BENCHMARKS / "template" / "all.tsv"
    conda:
        "../../envs/brainage.yaml"
    script:
        "../scripts/template.py"


rule register:
    input:
        unpack(raw_images),
        template=rules.template.output if config["preprocessing"]["template"] else [],
    output:
        pd=PREPROCESS / "{subject}_PD.nii.gz",
        t1=PREPROCESS / "{subject}_T1_reg_PD.nii.gz",
        tof=PREPROCESS / "{subject}_TOF_reg_PD.nii.gz",
        mask=PREPROCESS / "{subject}_brain_mask.nii.gz",
        t1_transform=PREPROCESS / "{subject}_T1_to_PD.mat",
        tof_transform=PREPROCESS / "{subject}_TOF_to_PD.mat",
        summary=PREPROCESS / "{subject}_registration.json",
        **(
            {"template_transform": PREPROCESS / "{subject}_PD_to_template.mat"}
            if config["preprocessing"]["template"]
            else {}
        ),
    params:
        transform=config["preprocessing"]["registration"],
        seed=config["seed"],
    log:
        LOGS / "register" / "{subject}.log",
    benchmark:
        BENCHMARKS / "register" / "{subject}.tsv"
    threads: 1
    resources:
        # Peak RSS at IXI's real size (T1 256×256×150, MRA 512×512×100): 1.3 GB.
        mem_mb=3000,
        runtime=30,
    conda:
        "../../envs/brainage.yaml"
    script:
        "../scripts/register.py"


rule binarize:
    input:
        tof=rules.register.output.tof,
        mask=rules.register.output.mask,
    output:
        PREPROCESS / "{subject}_TOF_reg_PD_bin.nii.gz",
    params:
        **config["preprocessing"]["binarize"],
    log:
        LOGS / "binarize" / "{subject}.log",
    benchmark:
        BENCHMARKS / "binarize" / "{subject}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/brainage.yaml"
    script:
        "../scripts/binarize.py"


rule training_arrays:
    input:
        t1=rules.register.output.t1,
        tof=rules.register.output.tof,
        tof_bin=rules.binarize.output[0],
        mask=rules.register.output.mask,
        summary=rules.register.output.summary,
    output:
        **{
            channel: PREPROCESS / "tensors" / f"{channel}.npy"
            for channel in ("T1", "TOF", "TOF_bin")
        },
    params:
        grid=config["preprocessing"]["grid"],
        template=config["preprocessing"]["template"],
    log:
        LOGS / "training_arrays" / "{subject}.log",
    benchmark:
        BENCHMARKS / "training_arrays" / "{subject}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/brainage.yaml"
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
        png=RESULTS / "qc" / "{subject}.png",
        numbers=RESULTS / "qc" / "{subject}.json",
    log:
        LOGS / "qc_subject" / "{subject}.log",
    benchmark:
        BENCHMARKS / "qc_subject" / "{subject}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/brainage.yaml"
    script:
        "../scripts/qc_subject.py"
