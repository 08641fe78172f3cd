# Brain age from T1 and TOF-MRA on IXI: the whole study, from raw images to the report.
# Run: snakemake --cores 8 --resources gpu=1   (README.md explains everything else)

import os
import sys
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")

# The science lives in src/brainage; jobs find it here whether or not it is pip-installed
# (for example inside the conda environments of --sdm conda). update(), not os.environ[...] =:
# snakemake --lint takes a subscript for a variable the user must supply (envvars directive),
# and the workflow sets this one itself.
PACKAGE_ROOT = str(Path(workflow.basedir) / "src")
sys.path.insert(0, PACKAGE_ROOT)
os.environ.update(PYTHONPATH=os.pathsep.join(filter(None, [PACKAGE_ROOT, os.environ.get("PYTHONPATH")])))


configfile: workflow.source_path("config/config.yaml")


report: "workflow/report/workflow.rst"


validate(config, "config/schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"


if DOWNLOADS_IXI:

    include: "workflow/rules/ixi.smk"


include: "workflow/rules/inventory.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/manifest.smk"
include: "workflow/rules/split.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/attribution.smk"
include: "workflow/rules/evaluate.smk"


if CROSSVAL_FOLDS:

    include: "workflow/rules/crossval.smk"


rule all:
    input:
        final_outputs(),
