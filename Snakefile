# Brain age from T1 and TOF-MRA on IXI: the whole study, from raw images to the report.
# Run: snakemake --cores 8 --resources gpu=1   (README.md explains everything else)

import os
import sys
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")

# The science lives in src/brainage; jobs find it here whether or not it is pip-installed
# (for example inside the conda environments of --sdm conda).
PACKAGE_ROOT = str(Path(workflow.basedir) / "src")
sys.path.insert(0, PACKAGE_ROOT)
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))


configfile: workflow.source_path("config/config.yaml")


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
include: "workflow/rules/evaluate.smk"


rule all:
    input:
        final_outputs(),
