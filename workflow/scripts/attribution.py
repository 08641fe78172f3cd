"""Attribution maps of one trained run's eval predictions, their regional summary and figure."""

from pathlib import Path

from brainage.attribution import AttributionOutputs, RegionOutputs, attribute_run
from brainage.io import read_table
from brainage.logs import log_to_file
from brainage.paths import derived
from brainage.vocabulary import EVAL

log = log_to_file(snakemake.log[0])
params = snakemake.params
wildcards = snakemake.wildcards
run = (wildcards.modality, wildcards.model, int(wildcards.replicate))
split = read_table(snakemake.input.split)
subject_maps = None
if params.settings["subject_maps"]:
    # The rule's output is their folder; each eval subject's map in it is named by the same builder.
    entities = {"modality": run[0], "model": run[1], "replicate": run[2]}
    subjects = split.loc[split["set"] == EVAL, "subject"]
    subject_maps = {subject: derived("attribution", **entities, subject=subject, ext=".nii.gz") for subject in subjects}
attribute_run(
    Path(snakemake.input.weights),
    read_table(snakemake.input.manifest),
    split,
    run=run,
    settings=params.settings,
    regions=RegionOutputs(
        regions=Path(snakemake.input.regions),
        table=Path(snakemake.input.region_table),
        means=Path(snakemake.input.training_means),
    ),
    outputs=AttributionOutputs(
        mean_map=Path(snakemake.output.mean_map),
        table=Path(snakemake.output.table),
        figure=Path(snakemake.output.figure),
        subject_maps=subject_maps,
    ),
    batch_size=params.batch_size,
    seed=params.seed,
    device=params.device,
    threads=snakemake.threads,
    log=log.info,
)
